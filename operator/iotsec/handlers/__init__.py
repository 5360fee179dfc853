"""kopf handlers. Importing this package registers them; `iotsec run` does that and starts kopf."""

from iotsec import runtime
from iotsec.handlers import backup, securitydomain, tenant, webhook_tls

__all__ = ["backup", "runtime", "securitydomain", "tenant", "webhook_tls"]
