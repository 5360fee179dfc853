"""Tamper-evident audit trail: policy rendering, the hash-chained store, the sink and anomaly rules."""
