"""Every kopf handler the operator registers retries an unexpected exception after IOTSEC_RETRY_SECONDS, not after
kopf's default of 60 s (issue 15: after a restart, resources were reconciled a minute late)."""

from __future__ import annotations

import json
import subprocess
import sys

# A fresh interpreter: kopf's registry is process-wide, and the handlers register when their modules are imported.
PROBE = """
import json
import kopf
from iotsec.controllers import register
from iotsec.model.config import Config

register(Config(retry_seconds=7.5, metrics_port=0))
registry = kopf.get_default_registry()
settings = kopf.OperatorSettings()
kopf_default = settings.execution.default_backoff
for handler in registry._activities.get_all_handlers():
    if handler.id == "retry-backoff" and handler.activity.value == "startup":  # only this one: the others talk to the API server
        handler.fn(settings=settings)
parts = ("_activities", "_indexing", "_watching", "_spawning", "_changing", "_webhooks")
handlers = [h for part in parts for h in getattr(registry, part).get_all_handlers()]
ours = [h for h in handlers if getattr(h.fn, "__module__", "").startswith("iotsec.")]
# kopf's own rule (kopf._core.actions.execution): the handler's backoff, else the settings' default
effective = {
    f"{h.fn.__module__}:{h.id}": h.backoff if h.backoff is not None else settings.execution.default_backoff
    for h in ours
}
print(json.dumps({"kopf_default": kopf_default, "effective": effective}))
"""


def test_every_handler_retries_after_the_configured_delay() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    effective = found["effective"]
    assert found["kopf_default"] == 60  # what a handler waited before
    expected = {  # one of each sort: level-triggered, timer, delete, watch event, startup, probe
        "iotsec.controllers.reconciler:reconcile",
        "iotsec.controllers.reconciler:resync",
        "iotsec.controllers.securitydomain:on_delete",
        "iotsec.controllers.securitydomain:on_namespace",
        "iotsec.controllers.backup:on_job",
        "iotsec.controllers.tenant:requests",
        "iotsec.controllers.runtime:configure",
        "iotsec.controllers.runtime:apiserver",
    }
    assert expected <= effective.keys(), sorted(effective)
    assert {key: value for key, value in effective.items() if value != 7.5} == {}
