"""The tamper-evident audit trail (pure, files only): the hash chain and its signatures, the segment store
(checkpoints, seals, retention, export), reading and verifying segments, and the anomaly rules. The sink that
receives events is iotsec.servers.auditsink; the API server's audit policy is built in iotsec.build."""
