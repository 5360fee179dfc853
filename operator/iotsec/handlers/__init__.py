"""kopf handlers. Importing this package registers them; `iotsec run` does that and starts kopf."""

from iotsec import runtime
from iotsec.handlers import audit, backup, grants, securitydomain, tenant, webhook_tls

__all__ = ["audit", "backup", "grants", "runtime", "securitydomain", "tenant", "webhook_tls"]
