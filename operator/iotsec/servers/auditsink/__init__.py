"""The audit sink: receives the API server's audit events over mutual TLS into the tamper-evident store
(server.py) and reports the pipeline's health into the AuditPolicy status (reporter.py)."""
