"""kopf handlers, one module per kind (plus webhook TLS and namespace grants), thin: parse → build → apply → status.

`register(settings)` is how a process starts them: it loads the settings first, then imports the handler modules,
which registers them with kopf (their timers take the resync interval as they register).
"""

from __future__ import annotations

import importlib

from iotsec.model.config import Config

HANDLER_MODULES = ("securitydomain", "tenant", "backup", "audit", "grants", "webhook_tls", "scan")


def register(settings: Config) -> None:
    from iotsec.controllers import runtime

    runtime.load(settings)
    for name in HANDLER_MODULES:
        importlib.import_module(f"{__name__}.{name}")
