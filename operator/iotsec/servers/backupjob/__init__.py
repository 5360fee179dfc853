"""Backup Jobs: restic with strict outcome rules (X.1369 §9.2, §9.6); standard library only.

- `runner`: the entry point (`main`, exit codes, the command line) that `iotsec backup` calls;
- `config`: CONFIG.json and the repository password (`load_config`, `read_password`, `ConfigError`);
- `operations`: `Runner`, the five operations (init, backup, verify, restore, drill) and their outcome rules;
- `restic`: running the binary (`Restic`: environment, secret redaction), `Target`, `Retention`, restic's JSON;
- `result`: the `Result` JSON, the `OperationOutcome` it is collected in, the bounded termination message.
"""
