"""The operator keeps the webhook's CA and serving certificate and the CA bundle the API server trusts.

Level-triggered on a timer: read the Secret, let `certs.ensure_webhook_tls` decide, write only what changed.
During a CA rotation the previous CA stays in the bundle, so clients holding either CA keep working.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from iotsec import certs, secretdata
from iotsec.desired.webhook import ca_bundle_patch, tls_secret
from iotsec.kube import ApiError, Kube
from iotsec.runtime import CONFIG, kube

log = logging.getLogger("iotsec.webhook-tls")
WEBHOOK_NAMES = ("workloads.iotsec.io", "bindings.iotsec.io")


def service_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def ensure_webhook_tls(api: Kube, now: datetime) -> list[str]:
    """Make the Secret and the configuration's CA bundle right; return what changed (empty: nothing)."""
    namespace, secret_name = CONFIG.webhook_namespace, CONFIG.webhook_secret
    secret = api.get("v1", "Secret", secret_name, namespace)
    current = _read(secret)
    dns = [*service_names(CONFIG.webhook_service, namespace), *CONFIG.webhook_extra_dns]
    desired, reasons = certs.ensure_webhook_tls(current, dns, CONFIG.webhook_extra_ips, now)
    if reasons:
        api.apply(tls_secret(namespace, secret_name, desired.to_secret_data()))
        log.info("webhook TLS in %s/%s: %s", namespace, secret_name, "; ".join(reasons))
    if _inject(api, desired.bundle()):
        reasons.append(f"CA bundle injected into ValidatingWebhookConfiguration {CONFIG.webhook_configuration}")
    return reasons


def _read(secret: dict[str, Any] | None) -> certs.WebhookTLS | None:
    if not secret or not secret.get("data"):
        return None
    try:
        return certs.WebhookTLS.from_secret_data(secretdata.decode(secret))
    except ValueError as exc:  # a damaged Secret is replaced, never trusted
        log.warning("webhook TLS Secret is unusable, issuing new material: %s", exc)
        return None


def _inject(api: Kube, bundle: str) -> bool:
    name = CONFIG.webhook_configuration
    configuration = api.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", name)
    if configuration is None:
        return False  # installed by the chart; until then there is nothing to inject into
    encoded = base64.b64encode(bundle.encode()).decode()
    present = [w["name"] for w in configuration.get("webhooks") or () if w["name"] in WEBHOOK_NAMES]
    if all(
        w.get("clientConfig", {}).get("caBundle") == encoded for w in configuration["webhooks"] if w["name"] in present
    ):
        return False
    api.apply(ca_bundle_patch(name, present, bundle))
    return True


async def _keep_current(interval: float) -> None:
    while True:
        try:
            changed = await asyncio.to_thread(ensure_webhook_tls, kube(), datetime.now(UTC))
            if changed:
                log.info("webhook TLS: %s", "; ".join(changed))
        except ApiError as exc:
            log.warning("webhook TLS not checked this round: %s", exc)
        await asyncio.sleep(interval)


@kopf.on.startup()
async def start_webhook_tls(memo: kopf.Memo, **_: Any) -> None:
    if CONFIG.webhook_secret:
        memo["webhook_tls"] = asyncio.create_task(_keep_current(CONFIG.webhook_tls_check_seconds))


@kopf.on.cleanup()
async def stop_webhook_tls(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("webhook_tls")
    if task:
        task.cancel()
