"""kopf handlers. Importing this package registers them; `iotsec run` does that and starts kopf."""

from iotsec.controllers import audit, backup, grants, runtime, securitydomain, tenant, webhook_tls

__all__ = ["audit", "backup", "grants", "runtime", "securitydomain", "tenant", "webhook_tls"]
