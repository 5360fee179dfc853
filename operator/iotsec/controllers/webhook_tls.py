"""The operator keeps the webhook's CA and serving certificate and the CA bundle the API server trusts.

Level-triggered: read the Secret, let `certs.ensure_webhook_tls` decide, write only what changed. It runs at
startup, whenever the ValidatingWebhookConfiguration is created or changed (a watch: a configuration installed
after the operator started gets its bundle within seconds instead of failing every write closed until the next
periodic check), and periodically for expiry.

Order of writes: the CA bundle first, then the Secret. The API server trusts a new CA before the webhook can
serve a certificate signed by it; during a CA rotation the previous CA stays in the bundle, so the certificate
the webhook serves until it reloads the Secret keeps validating too.

A Secret that exists but is unreadable, or is not labelled as iotsec's, is never overwritten (`keysecrets`): a
Warning log line, a Warning event and iotsec_key_unreadable{secret} = 1, until a person annotates it
`iotsec.io/replace-unreadable: "true"`. The annotation on a Secret iotsec can read is ignored (and said so). A
replacement keeps the old CA in the bundle when it can be read and the API server trusts it already.

The same apply keeps the webhook `domainkinds.iotsec.io` in the configuration: the kinds SecurityDomains add to the
workload table (`spec.workloadKinds`) that the chart's workloads hook does not register, with that hook's client and
selector. A SecurityDomain event wakes the check. With cert-manager the operator cannot write the configuration: such
kinds are registered through the chart's `webhook.workloadKinds` instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import kopf

from iotsec.api.common import API_VERSION, GROUP, VERSION
from iotsec.build.webhook import (
    DOMAIN_KINDS_HOOK,
    WORKLOADS_HOOK,
    ca_bundle_patch,
    domain_kinds_webhook,
    tls_secret,
)
from iotsec.controllers import metrics
from iotsec.controllers.runtime import config, kube
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model import keysecrets, secretdata
from iotsec.model.labels import MANAGED_BY, MANAGER, REPLACE_UNREADABLE
from iotsec.pki import certs

log = logging.getLogger(__name__)
CONFIGURATION_API = ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")
DOMAIN_KIND = "SecurityDomain"
_lock = threading.Lock()  # the periodic loop and a direct call never issue two CAs at once
_reported: set[str] = set()  # unreadable Secrets whose Warning event is out: one event per episode, not per check
_ignored: set[str] = set()  # readable Secrets whose ignored replace annotation was reported
REPLACE_IGNORED = "ReplaceIgnored"
_wake: asyncio.Event | None = None


def service_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def ensure_webhook_tls(api: Kube, now: datetime) -> list[str]:
    """Make the configuration's CA bundle and the Secret right, in that order; return what changed."""
    with _lock:
        return _ensure(api, now, config().webhook_namespace, config().webhook_secret_name)


def _ensure(api: Kube, now: datetime, namespace: str, secret_name: str, again: bool = True) -> list[str]:
    secret = api.get("v1", "Secret", secret_name, namespace)
    replace = False
    try:
        current = read_secret(secret)
    except keysecrets.KeyUnreadableError as exc:
        if not keysecrets.replacement_requested(secret):
            _unreadable(api, secret, namespace, secret_name, str(exc))
            return []
        current, replace = None, True  # unusable, and a person asked for a new one
    else:
        _replacement_ignored(api, secret, namespace, secret_name)
    _readable(namespace, secret_name)
    dns = [*service_names(config().webhook_service, namespace), *config().webhook_extra_dns]
    desired, reasons = certs.ensure_webhook_tls(current, dns, config().webhook_extra_ips, now)
    if replace:
        desired = _keeping_trusted_ca(api, desired, secret, now)
    changed = []
    if _inject(api, desired.bundle()):  # before the Secret: never serve a certificate the API server cannot check
        changed.append(f"CA bundle injected into ValidatingWebhookConfiguration {config().webhook_configuration}")
    if reasons:
        if replace:
            if not _deleted_as_judged(api, secret):
                # the bundle now holds a CA nobody serves with: judge the Secret written meanwhile and inject its own
                return changed + (_ensure(api, now, namespace, secret_name, again=False) if again else [])
            reasons.insert(0, f"replaced the unreadable Secret as its {REPLACE_UNREADABLE} annotation asks")
        api.apply(tls_secret(namespace, secret_name, desired.to_secret_data()))
        log.info("webhook TLS in %s/%s: %s", namespace, secret_name, "; ".join(reasons))
    return changed + reasons


def _deleted_as_judged(api: Kube, secret: dict[str, Any] | None) -> bool:
    """Delete the unreadable Secret (a foreign type or owner cannot be applied over, and a Secret's type cannot be
    changed in place), but only the version judged unreadable: one written since (a person fixing it) is kept and
    judged at the next check."""
    metadata = (secret or {}).get("metadata") or {}
    try:
        api.delete("v1", "Secret", metadata["name"], metadata.get("namespace"), unchanged_since=secret)
    except ApiError as exc:
        if exc.status != 409:
            raise
        log.warning(
            "webhook TLS Secret %s/%s changed after it was judged unreadable: not replaced; judged again at the next "
            "check",
            metadata.get("namespace"),
            metadata["name"],
        )
        return False
    return True


def _keeping_trusted_ca(
    api: Kube, desired: certs.WebhookTLS, old: dict[str, Any] | None, now: datetime
) -> certs.WebhookTLS:
    """The replacement, with the old Secret's CA kept as the previous one when it can still be read, is valid and is
    what the API server trusts now: the webhook serves the old certificate until it reloads the Secret. A CA the
    API server does not trust yet (a foreign Secret's) is never added."""
    try:
        old_ca = secretdata.decode(old).get(certs.KEY_CA_CERT) or ""
        (old_ca,) = certs.certs_in_bundle(old_ca)
        expired = certs.not_after(old_ca) <= now
    except (ValueError, UnicodeError):
        return desired
    trusted = _trusted_now(api)
    if expired or certs.fingerprint(old_ca) not in trusted or old_ca == desired.ca.cert_pem:
        return desired
    return dataclasses.replace(desired, previous_ca_cert_pem=old_ca)


def _trusted_now(api: Kube) -> set[str]:
    """Fingerprints of the CAs every webhook of the configuration trusts now (empty without a configuration)."""
    configuration = api.get(*CONFIGURATION_API, config().webhook_configuration) or {}
    trusted: set[str] | None = None
    for webhook in configuration.get("webhooks") or []:
        try:
            bundle = base64.b64decode((webhook.get("clientConfig") or {}).get("caBundle") or "").decode()
            found = {certs.fingerprint(pem) for pem in certs.certs_in_bundle(bundle)}
        except (ValueError, UnicodeError):
            found = set()
        trusted = found if trusted is None else trusted & found
    return trusted or set()


def _replacement_ignored(api: Kube, secret: dict[str, Any] | None, namespace: str, name: str) -> None:
    """The replace annotation on a Secret iotsec can read: ignored (replacing would cut off clients for nothing),
    said once per episode in a log line and an event."""
    ref = keysecrets.secret_ref(namespace, name)
    if not keysecrets.replacement_requested(secret):
        _ignored.discard(ref)
        return
    if ref in _ignored:
        return
    message = (
        f"webhook TLS Secret {ref} is readable and iotsec's: its {REPLACE_UNREADABLE} annotation is "
        "ignored (it applies only to an unreadable or foreign Secret); remove it"
    )
    log.warning("%s", message)
    try:
        api.post_event(_event_subject(api, secret), "Normal", REPLACE_IGNORED, message)
    except ApiError as exc:
        log.warning("could not post the %s event (the log line stands): %s", REPLACE_IGNORED, exc)
    _ignored.add(ref)


def read_secret(secret: dict[str, Any] | None) -> certs.WebhookTLS | None:
    """The material in the webhook's Secret; None when there is no Secret. KeyUnreadable when it exists but is
    damaged or someone else's: such a Secret is reported, never overwritten."""
    if secret is None:
        return None
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY) != MANAGER:
        raise keysecrets.KeyUnreadableError(f"it is not labelled {MANAGED_BY}={MANAGER}: someone else's Secret")
    try:
        return certs.WebhookTLS.from_secret_data(secretdata.decode(secret))
    except (ValueError, UnicodeError) as exc:
        raise keysecrets.KeyUnreadableError(str(exc)) from None


def _unreadable(api: Kube, secret: dict[str, Any] | None, namespace: str, name: str, why: str) -> None:
    ref = keysecrets.secret_ref(namespace, name)
    metrics.KEY_UNREADABLE.labels(ref).set(1)
    message = f"webhook TLS Secret {ref} is unusable ({why}); {keysecrets.advice(namespace, name)}"
    log.warning("%s", message)
    if ref in _reported:
        return
    try:
        api.post_event(_event_subject(api, secret), "Warning", keysecrets.REASON, message)
    except ApiError as exc:
        log.warning("could not post the KeyUnreadable event (the log line and the metric stand): %s", exc)
        return
    _reported.add(ref)


def _event_subject(api: Kube, secret: dict[str, Any] | None) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration: its webhooks are what stops working when the certificate can no longer
    be renewed, `kubectl describe validatingwebhookconfiguration` is where a person looks at a failing webhook, and
    it exists however the operator runs (a Deployment of any name, or out of cluster). The Secret itself until
    the configuration is installed."""
    configuration = api.get(*CONFIGURATION_API, config().webhook_configuration)
    return configuration or {"apiVersion": "v1", "kind": "Secret", **(secret or {})}


def _readable(namespace: str, name: str) -> None:
    ref = keysecrets.secret_ref(namespace, name)
    metrics.KEY_UNREADABLE.labels(ref).set(0)
    _reported.discard(ref)


def _inject(api: Kube, bundle: str) -> bool:
    """Put `bundle` into every webhook of iotsec's configuration (all call the same webhook server), and keep the
    webhook for the SecurityDomains' workloadKinds (domainkinds.iotsec.io) registering exactly their kinds."""
    name = config().webhook_configuration
    configuration = api.get(*CONFIGURATION_API, name)
    if configuration is None:
        return False  # installed by the chart; the watch injects as soon as it exists
    live = {w["name"]: w for w in configuration.get("webhooks") or []}
    chart = [hook for hook in live if hook != DOMAIN_KINDS_HOOK]
    workloads = live.get(WORKLOADS_HOOK)
    added = domain_kinds_webhook(workloads, domain_kinds(api)) if workloads is not None else None
    wanted = ca_bundle_patch(name, chart, bundle, [added] if added else [])
    if _unchanged(live, wanted, added):
        return False
    api.apply(wanted)  # one apply owns both: a second one under the same field manager would drop the other's fields
    return True


def _unchanged(live: dict[str, dict[str, Any]], wanted: dict[str, Any], added: dict[str, Any] | None) -> bool:
    if any(
        (live.get(w["name"], {}).get("clientConfig") or {}).get("caBundle") != w["clientConfig"]["caBundle"]
        for w in wanted["webhooks"]
    ):
        return False
    current = live.get(DOMAIN_KINDS_HOOK)
    return (current is None) == (added is None) and (added is None or current.get("rules") == added["rules"])


def domain_kinds(api: Kube) -> list[tuple[str, str]]:
    """(group, resource) of every kind a SecurityDomain adds to the workload table (its CRD schema validated them)."""
    found: set[tuple[str, str]] = set()
    for domain in api.list(API_VERSION, DOMAIN_KIND):
        for entry in (domain.get("spec") or {}).get("workloadKinds") or ():
            if isinstance(entry, dict) and isinstance(entry.get("resource"), str):
                found.add((str(entry.get("group") or ""), entry["resource"]))
    return sorted(found)


async def _check_now() -> bool:
    """One check; False when the API failed (the loop then retries soon instead of after the full interval)."""
    try:
        changed = await asyncio.to_thread(ensure_webhook_tls, kube(), datetime.now(UTC))
    except ApiError as exc:
        log.warning("webhook TLS not checked this round: %s", exc)
        return False
    if changed:
        log.info("webhook TLS: %s", "; ".join(changed))
    return True


async def keep_current(interval: float, wake: asyncio.Event) -> None:
    """Check now, then after `interval`, or as soon as `wake` is set (the configuration changed)."""
    while True:
        wake.clear()
        healthy = await _check_now()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=interval if healthy else min(interval, config().retry_seconds))


async def configuration_changed(type: str | None, **_: Any) -> None:
    """A watch event of iotsec's ValidatingWebhookConfiguration: check its bundle now. A coroutine, so it runs at
    once in the event loop instead of queueing behind every reconcile in kopf's thread pool."""
    if type != "DELETED" and _wake is not None:
        _wake.set()


@kopf.on.startup()
async def start_webhook_tls(memo: kopf.Memo, **_: Any) -> None:
    global _wake
    if config().webhook_secret_name:
        _wake = asyncio.Event()
        memo["webhook_tls"] = asyncio.create_task(keep_current(config().webhook_tls_check_seconds, _wake))


@kopf.on.cleanup()
async def stop_webhook_tls(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("webhook_tls")
    if task:
        task.cancel()


async def domains_changed(type: str | None, **_: Any) -> None:
    """A SecurityDomain changed: its workloadKinds may have, so check the configuration now."""
    if _wake is not None:
        _wake.set()


def _is_ours(name: str, **_: Any) -> bool:
    return name == config().webhook_configuration


if config().webhook_secret_name:  # with cert-manager the operator neither keeps the certificate nor watches the bundle
    kopf.on.event("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", when=_is_ours)(
        configuration_changed
    )
    kopf.on.event(GROUP, VERSION, "securitydomains")(domains_changed)
