"""Names of objects iotsec makes that the admission engine must recognise without importing their builders (which
bring the API models and cryptography with them: `iotsec check` of a Deployment needs neither)."""

from __future__ import annotations

ALWAYS_EXCLUDED = ("kube-system", "kube-public", "kube-node-lease")  # namespaces admission never checks
CANARY_ROLE_PREFIX = "iotsec-audit-sink-canary-"  # an audit sink's canary Role
BACKUP_ACCOUNT_PREFIX = "iotsec-backup-"  # a BackupPolicy's Jobs' ServiceAccount


def storage_class_name(tenant: str) -> str:
    """A tenant's encrypted StorageClass."""
    return f"iotsec-{tenant}-encrypted"
