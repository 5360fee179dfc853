"""Runtime evidence: what the operator, the backup Jobs and the audit sink recorded in the status of iotsec's custom
resources, judged against X.1369 with the figures that prove it (ages, expiries, measured durations).

Each probe reads `Inventory.objects` only. Offline (`mode == "files"`) nothing has a status: a probe answers
`partial` ("runtime evidence needs a live cluster") where something is declared, never `met`. Secret data is never
read: key ages come from the status the operator writes and from the Secrets' metadata.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from iotsec.api.cron import CronError, validate_cron
from iotsec.api.durations import parse_duration
from iotsec.conformance.inventory import view
from iotsec.conformance.model import (
    CLUSTER,
    Assessment,
    Evidence,
    Inventory,
    ObjectRef,
    Probe,
    Scope,
    Verdict,
    worst,
)
from iotsec.model import conditions, selectors
from iotsec.model.controls import CONTROLS
from iotsec.model.labels import DOMAIN_LABEL, TENANT_LABEL
from iotsec.model.time import parse_rfc3339, rfc3339

GROUP = "iotsec.io"
OFFLINE = "runtime evidence needs a live cluster"
OFFLINE_MISSING = "run `iotsec report` against the cluster (kubeconfig) to read the status the operator records"
TRUST_BUNDLE = "iotsec-device-trust"  # iotsec.build.tenant.DEVICE_TRUST (build is below, but kept as data here)
CA_EXPIRY_WARNING = timedelta(days=30)
FRESH_FACTOR = 2  # evidence is fresh while younger than twice the period it is produced at
AUDIT_VERIFY_EVERY = timedelta(hours=6)  # the sink's --verify-every default
SILENCE_MARGIN = timedelta(minutes=3)  # iotsec.build.audit.SILENCE_MARGIN: the sink's status cadence plus slack
STRONG_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_PEM_CRL = re.compile(r"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

C_APP_KEYS = "X1369-9.1.1.2-4"
C_APP_KEY_STRENGTH = "X1369-9.1.1.2-3"
C_DEVICE_KEYS = "X1369-9.1.1.3-2"
C_DEVICE_AUTH = "X1369-9.1.1.3-3"
C_DEVICE_KEY_STRENGTH = "X1369-9.1.1.3-4"
C_DEVICE_IDENTITY = "X1369-9.1.1.3-1"
C_DEVICE_CLASSES = "X1369-9.1.2-3"
C_BACKUP = "X1369-9.2-1"
C_INTEGRITY = "X1369-9.2.4-3"
C_BACKUP_RESTORE = "X1369-9.2.4-4"
C_ARCHIVE = "X1369-9.2.4-5"
C_DRILLS = "X1369-9.6.1-2"
C_FAST_RESTORE = "X1369-9.6.6-2"
C_OFFSITE = "X1369-9.6.6-1"
C_SYSTEM_LOG = "X1369-9.3.1-1"
C_OPERATION_LOG = "X1369-9.5.1-2"
C_BRUTE_FORCE = "X1369-9.1.1.1-5"
C_INTRUSION = "X1369-9.1.4-5"
C_INVOCATIONS = "X1369-9.1.5.5-1"
C_LOG_NOT_LOST = "X1369-9.6.4-2"
C_LOG_PROTECTED = "X1369-9.6.4-4"
C_ADMIN_ACTIVITY = "X1369-9.6.4-1"
C_LOG_BACKED_UP = "X1369-9.6.4-3"
C_LOG_EXPORT = "X1369-9.6.4-5"
C_LOG_TLS = "X1369-9.6.4-6"
C_MONITORING = "X1369-9.6.4-7"
C_INTRUSION_DETECTION = "X1369-9.6.5-1"


# ---------------------------------------------------------------- small pieces


def when(value: Any) -> datetime | None:
    """An RFC 3339 status field as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value).astimezone(UTC)
    except ValueError:
        return None


def span(delta: timedelta) -> str:
    """A duration as a person reads it: 45 s, 12 min, 3 h, 20 d."""
    seconds = abs(delta.total_seconds())
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def ago(now: datetime, then: datetime) -> str:
    return f"{span(now - then)} ago" if then <= now else f"in {span(then - now)} (clock ahead)"


def stamp(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return conditions.find(_status(obj).get("conditions"), type_)


def _is(cond: Mapping[str, Any] | None, status: str) -> bool:
    return cond is not None and cond.get("status") == status


def unavailable(inventory: Inventory, kind: str, group: str = "") -> str | None:
    """Why objects of `kind` could not be read, if the inventory says so ("group/Kind", core group "" or absent)."""
    for key in (f"{group}/{kind}", kind) if not group else (f"{group}/{kind}",):
        if key in inventory.unavailable:
            return inventory.unavailable[key]
    return None


@dataclass(frozen=True)
class Index:
    """Observed objects of some kinds by (kind, namespace, name) and by (kind, namespace): built once per probe, so
    a report over thousands of namespaces does not scan the inventory once per namespace."""

    named: Mapping[tuple[str, str | None, str], dict[str, Any]]
    grouped: Mapping[tuple[str, str | None], list[dict[str, Any]]]

    @classmethod
    def of(cls, inventory: Inventory, kinds: Sequence[str], group: str | None = "") -> Index:
        named: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        grouped: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        for kind in kinds:
            for obj in view(inventory).objects_of(kind, group):
                meta = _meta(obj)
                named[(kind, meta.get("namespace"), str(meta.get("name", "")))] = obj
                grouped.setdefault((kind, meta.get("namespace")), []).append(obj)
        return cls(named, grouped)

    def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        return self.named.get((kind, namespace, name))

    def in_namespace(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        return self.grouped.get((kind, namespace), [])


@dataclass(frozen=True)
class Finding:
    """One fact behind a verdict: its verdict, the sentence with the figures, where it was read and when."""

    verdict: Verdict
    text: str
    objects: tuple[ObjectRef, ...] = ()
    observed_at: datetime | None = None
    missing: str = ""

    @property
    def evidence(self) -> Evidence:
        return Evidence(self.text, self.objects, stamp(self.observed_at))


def assess(control: str, scope: Scope, findings: Sequence[Finding], mechanism: str) -> Assessment:
    """The worst finding's verdict; its text as summary (several worst ones joined); every finding as evidence."""
    verdict = worst(f.verdict for f in findings) or Verdict.NOT_APPLICABLE
    summary = "; ".join(f.text for f in findings if f.verdict == verdict) or "nothing to assess in this scope"
    missing = "; ".join(dict.fromkeys(f.missing for f in findings if f.missing and f.verdict != Verdict.MET))
    return Assessment(control, scope, verdict, summary, tuple(f.evidence for f in findings), missing, mechanism)


def offline(control: str, scope: Scope, declared: str, objects: tuple[ObjectRef, ...], mechanism: str) -> Assessment:
    text = f"{declared}; {OFFLINE}"
    return Assessment(control, scope, Verdict.PARTIAL, text, (Evidence(text, objects),), OFFLINE_MISSING, mechanism)


def not_applicable(control: str, scope: Scope, why: str, objects: tuple[ObjectRef, ...], mechanism: str) -> Assessment:
    return Assessment(control, scope, Verdict.NOT_APPLICABLE, why, (Evidence(why, objects),), "", mechanism)


# ---------------------------------------------------------------- who belongs where


def tenants(inventory: Inventory) -> list[dict[str, Any]]:
    return view(inventory).objects_of("TenantIsolation", GROUP)


def tenant_scope(tenant: Mapping[str, Any]) -> Scope:
    return Scope("tenant", _name(tenant), _spec(tenant).get("securityDomain"), _name(tenant))


def tenant_namespaces(tenant: Mapping[str, Any]) -> list[str]:
    """The namespaces the operator walled off (status), else the declared ones."""
    found = _status(tenant).get("namespaces") or _spec(tenant).get("namespaces") or []
    return sorted({str(n) for n in found})


@dataclass(frozen=True)
class Members:
    """Namespace -> (domain, tenant name) for every member namespace: labelled by a SecurityDomain, or a tenant's."""

    of: Mapping[str, tuple[str | None, str | None]]

    def scope(self, namespace: str) -> Scope:
        domain, tenant = self.of.get(namespace, (None, None))
        return Scope("namespace", namespace, domain, tenant)


def members(inventory: Inventory) -> Members:
    """Member namespaces with their domain and tenant: as the webhook resolves them (the report's shared view),
    completed from the tenants' namespaces and the labels the operator puts on namespaces."""
    by_tenant_id = {str(_spec(t).get("tenantID", "")): _name(t) for t in tenants(inventory)}
    found: dict[str, tuple[str | None, str | None]] = {}
    for tenant in tenants(inventory):
        for namespace in tenant_namespaces(tenant):
            found[namespace] = (_spec(tenant).get("securityDomain"), _name(tenant))
    for obj in view(inventory).objects_of("Namespace", ""):
        labels = _meta(obj).get("labels") or {}
        domain, tenant_id = labels.get(DOMAIN_LABEL), labels.get(TENANT_LABEL)
        if domain or tenant_id:
            before = found.get(_name(obj), (None, None))
            found[_name(obj)] = (domain or before[0], by_tenant_id.get(tenant_id or "") or before[1])
    shared = view(inventory)
    for namespace in {*shared.members, *shared.tenant_of}:
        before = found.get(namespace, (None, None))
        found[namespace] = (shared.members.get(namespace) or before[0], shared.tenant_of.get(namespace) or before[1])
    return Members(found)


# ---------------------------------------------------------------- application keys


KEY_ALGORITHMS_STRONG = {"ed25519": "Ed25519 signing keys", "hmac-sha256": "256-bit HMAC-SHA256 secrets"}


def app_keys(inventory: Inventory) -> Iterator[Assessment]:
    """9.1.1.2-4 (a key per application, rotated on schedule) and 9.1.1.2-3 (no weak algorithm), per tenant and per
    namespace holding application keys."""
    mechanism = "TenantIsolation status (applications) and the key Secrets' metadata"
    index = Index.of(inventory, ("Secret",))
    for tenant in tenants(inventory):
        scope, ref = tenant_scope(tenant), ObjectRef.of(tenant)
        apps = [a for a in _spec(tenant).get("applications") or () if isinstance(a, Mapping)]
        if not apps:
            why = "no applications declared: no application keys to manage"
            for control in (C_APP_KEYS, C_APP_KEY_STRENGTH):
                yield not_applicable(control, scope, why, (ref,), mechanism)
            continue
        if inventory.mode == "files":
            planned = tuple(ObjectRef("v1", "Secret", _key_secret(a), a.get("namespace"), planned=True) for a in apps)
            declared = f"{len(apps)} application keys declared ({_algorithms(apps)})"
            for control in (C_APP_KEYS, C_APP_KEY_STRENGTH):
                yield offline(control, scope, declared, (ref, *planned), mechanism)
            continue
        findings = [(str(a.get("namespace", "")), _app_key_finding(inventory, index, tenant, a)) for a in apps]
        rotated = condition(tenant, "KeysRotated")
        if _is(rotated, "False"):
            text = f"KeysRotated=False on TenantIsolation {_name(tenant)}: {(rotated or {}).get('message', '')}"
            findings.append(
                ("", Finding(Verdict.NOT_MET, text, (ref,), when((rotated or {}).get("lastTransitionTime"))))
            )
        yield assess(C_APP_KEYS, scope, [f for _, f in findings], mechanism)
        for namespace in sorted({ns for ns, _ in findings if ns}):
            own = [f for ns, f in findings if ns == namespace]
            yield assess(C_APP_KEYS, _namespace_scope(namespace, tenant), own, mechanism)
        yield _app_key_strength(tenant, apps, [f for _, f in findings], mechanism)


def _namespace_scope(namespace: str, tenant: Mapping[str, Any]) -> Scope:
    return Scope("namespace", namespace, _spec(tenant).get("securityDomain"), _name(tenant))


def _key_secret(app: Mapping[str, Any]) -> str:
    return f"iotsec-app-{app.get('name', '')}-key"  # iotsec.build.tenant.key_secret_name


def _algorithms(apps: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for app in apps:
        algorithm = str(app.get("keyAlgorithm") or "ed25519")
        counts[algorithm] = counts.get(algorithm, 0) + 1
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items()))


def _app_key_finding(inventory: Inventory, index: Index, tenant: Mapping[str, Any], app: Mapping[str, Any]) -> Finding:
    now: datetime = inventory.now
    name, namespace = str(app.get("name", "")), str(app.get("namespace", ""))
    recorded = {a.get("name"): a for a in _status(tenant).get("applications") or () if isinstance(a, Mapping)}
    entry = recorded.get(name) or {}
    secret_name = str(entry.get("keySecret") or _key_secret(app))
    secret_ref = ObjectRef("v1", "Secret", secret_name, namespace)
    refs = (ObjectRef.of(tenant), secret_ref)
    rotation = str(app.get("keyRotation") or "90d")
    cannot_list = unavailable(inventory, "Secret")
    secret = index.get("Secret", secret_name, namespace)
    if secret is None and cannot_list is None:
        return Finding(
            Verdict.NOT_MET,
            f"app {name}: key Secret {namespace}/{secret_name} does not exist",
            refs,
            missing="the operator writes the key Secret on its next reconcile; check the TenantIsolation's Ready",
        )
    created = when(entry.get("keyCreated"))
    due = when(entry.get("nextRotation"))
    if created is None and due is None:
        return Finding(
            Verdict.NOT_MET,
            f"app {name}: the operator records no key for {namespace}/{secret_name} (unreadable or not yet written)",
            refs,
            missing="see the TenantIsolation's Ready condition (KeyUnreadable) and its events",
        )
    if due is None and created is not None:
        due = created + _duration(rotation, timedelta(days=90))
    assert due is not None
    age = f"key created {ago(now, created)}" if created is not None else "key age unknown"
    figures = f"{age}, rotation every {rotation}"
    if due < now:
        return Finding(
            Verdict.NOT_MET,
            f"app {name}: rotation overdue by {span(now - due)} ({figures})",
            refs,
            created,
            "the operator rotates the key at its next reconcile: check that it runs (Ready, events)",
        )
    observed = f"; Secret created {_meta(secret).get('creationTimestamp')}" if secret is not None else ""
    note = f" (Secrets could not be listed: {cannot_list})" if secret is None else ""
    verdict = Verdict.PARTIAL if secret is None else Verdict.MET
    text = f"app {name}: {figures}, next rotation in {span(due - now)}{observed}{note}"
    return Finding(verdict, text, refs, created, "grant the report read access to Secrets' metadata" if note else "")


def _duration(text: str, default: timedelta) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError:
        return default


def _app_key_strength(
    tenant: Mapping[str, Any],
    apps: Sequence[Mapping[str, Any]],
    keys: Sequence[Finding],
    mechanism: str,
) -> Assessment:
    scope, ref = tenant_scope(tenant), ObjectRef.of(tenant)
    weak = [a for a in apps if str(a.get("keyAlgorithm") or "ed25519") not in KEY_ALGORITHMS_STRONG]
    if weak:
        names = ", ".join(f"{a.get('name')} ({a.get('keyAlgorithm')})" for a in weak)
        return assess(
            C_APP_KEY_STRENGTH, scope, [Finding(Verdict.NOT_MET, f"weak key algorithms: {names}", (ref,))], mechanism
        )
    present = [f for f in keys if f.verdict == Verdict.MET]
    text = (
        f"application keys generated by the operator with strong algorithms only ({_algorithms(apps)}); "
        f"{len(present)} of {len(apps)} keys observed current"
    )
    verdict = Verdict.MET if len(present) == len(apps) else Verdict.PARTIAL
    missing = "" if verdict == Verdict.MET else "some declared keys are missing, unreadable or overdue (see 9.1.1.2-4)"
    return assess(C_APP_KEY_STRENGTH, scope, [Finding(verdict, text, (ref,), missing=missing)], mechanism)


# ---------------------------------------------------------------- device CA, trust bundles, CRLs


def device_ca(inventory: Inventory) -> Iterator[Assessment]:
    """9.1.1.3-2 (the device CA and its key management), 9.1.1.3-3 (the CA bundle and a fresh CRL published where
    brokers verify devices) and 9.1.1.3-4 (strong device and CA keys), per tenant."""
    mechanism = "TenantIsolation status (deviceCASecret, deviceCANotAfter) and the iotsec-device-trust ConfigMaps"
    index = Index.of(inventory, ("Secret", "ConfigMap"))
    for tenant in tenants(inventory):
        scope, ref = tenant_scope(tenant), ObjectRef.of(tenant)
        if inventory.mode == "files":
            planned = tuple(
                ObjectRef("v1", "ConfigMap", TRUST_BUNDLE, ns, planned=True) for ns in tenant_namespaces(tenant)
            )
            ca = _spec(tenant).get("deviceCA") or {}
            declared = f"device CA {ca.get('keyAlgorithm', 'ecdsa-p256')} declared, valid {ca.get('validity', '1825d')}"
            for control in (C_DEVICE_KEYS, C_DEVICE_AUTH, C_DEVICE_KEY_STRENGTH):
                yield offline(control, scope, declared, (ref, *planned), mechanism)
            continue
        bundles = [_trust_bundle(index, ns) for ns in tenant_namespaces(tenant)]
        yield assess(C_DEVICE_KEYS, scope, _ca_findings(inventory, index, tenant), mechanism)
        yield assess(C_DEVICE_AUTH, scope, [_bundle_finding(inventory, b) for b in bundles], mechanism)
        yield assess(C_DEVICE_KEY_STRENGTH, scope, _strength_findings(tenant, bundles), mechanism)


@dataclass(frozen=True)
class _Bundle:
    namespace: str
    config_map: dict[str, Any] | None
    certificates: tuple[x509.Certificate, ...]  # empty when the data was not read (or not PEM)
    crls: tuple[x509.CertificateRevocationList, ...]


def _trust_bundle(index: Index, namespace: str) -> _Bundle:
    found = index.get("ConfigMap", TRUST_BUNDLE, namespace)
    data = (found or {}).get("data") or {}
    return _Bundle(namespace, found, tuple(_certificates(data.get("ca-bundle.crt"))), tuple(_crls(data.get("crl.pem"))))


def _certificates(pem: Any) -> list[x509.Certificate]:
    out = []
    for block in _PEM_CERT.findall(pem if isinstance(pem, str) else ""):
        try:
            out.append(x509.load_pem_x509_certificate(block.encode("ascii")))
        except (ValueError, UnicodeError):
            continue
    return out


def _crls(pem: Any) -> list[x509.CertificateRevocationList]:
    out = []
    for block in _PEM_CRL.findall(pem if isinstance(pem, str) else ""):
        try:
            out.append(x509.load_pem_x509_crl(block.encode("ascii")))
        except (ValueError, UnicodeError):
            continue
    return out


def _ca_findings(inventory: Inventory, index: Index, tenant: Mapping[str, Any]) -> list[Finding]:
    now: datetime = inventory.now
    status = _status(tenant)
    recorded = str(status.get("deviceCASecret") or "")
    refs: tuple[ObjectRef, ...] = (ObjectRef.of(tenant),)
    if "/" not in recorded:
        text = "the operator records no device CA Secret for this tenant (not reconciled yet?)"
        return [Finding(Verdict.NOT_MET, text, refs, missing="check the TenantIsolation's Ready condition")]
    namespace, name = recorded.split("/", 1)
    refs = (*refs, ObjectRef("v1", "Secret", name, namespace))
    secret = index.get("Secret", name, namespace)
    if secret is None and unavailable(inventory, "Secret") is None:
        text = f"device CA Secret {recorded} does not exist"
        return [Finding(Verdict.NOT_MET, text, refs, missing="restore the device CA Secret from a backup")]
    not_after = when(status.get("deviceCANotAfter"))
    findings = [_expiry_finding(now, recorded, not_after, refs, _spec(tenant).get("deviceCA") or {})]
    ready = condition(tenant, "Ready")
    if _is(ready, "False") and (ready or {}).get("reason") in ("RegistryMissing", "KeyUnreadable"):
        text = f"Ready=False ({(ready or {}).get('reason')}): {(ready or {}).get('message', '')}"
        findings.append(Finding(Verdict.PARTIAL, text, refs, when((ready or {}).get("lastTransitionTime")), text))
    return findings


def _expiry_finding(
    now: datetime, recorded: str, not_after: datetime | None, refs: tuple[ObjectRef, ...], ca: Mapping[str, Any]
) -> Finding:
    rotate = f"rotated {ca.get('rotateBefore', '180d')} before expiry"
    if not_after is None:
        return Finding(Verdict.PARTIAL, f"device CA {recorded} present, expiry not recorded", refs, missing=rotate)
    if not_after <= now:
        text = f"device CA {recorded} expired {ago(now, not_after)} ({stamp(not_after)})"
        return Finding(Verdict.NOT_MET, text, refs, not_after, f"the CA should have been {rotate}: check the operator")
    text = f"device CA {recorded} valid until {stamp(not_after)} (in {span(not_after - now)}), {rotate}"
    if not_after - now < CA_EXPIRY_WARNING:
        return Finding(Verdict.PARTIAL, text, refs, not_after, "CA expires within 30 days: check why it did not rotate")
    return Finding(Verdict.MET, text, refs, not_after)


def _bundle_finding(inventory: Inventory, bundle: _Bundle) -> Finding:
    now: datetime = inventory.now
    ref = ObjectRef("v1", "ConfigMap", TRUST_BUNDLE, bundle.namespace)
    where = f"{bundle.namespace}/{TRUST_BUNDLE}"
    if bundle.config_map is None:
        why = unavailable(inventory, "ConfigMap")
        if why is not None:
            return Finding(Verdict.PARTIAL, f"trust bundle {where} not observable: {why}", (ref,), missing=why)
        text = f"trust bundle {where} does not exist: brokers in {bundle.namespace} cannot verify device certificates"
        return Finding(Verdict.NOT_MET, text, (ref,), missing="the operator publishes it once the device CA exists")
    if not bundle.crls:
        names = (bundle.config_map.get("data") or {}).keys() or bundle.config_map.get("dataKeys") or ()
        keys = ", ".join(sorted(names)) or "none"
        text = f"trust bundle {where} published (keys: {keys}); CRL freshness not observable (data not read)"
        return Finding(Verdict.PARTIAL, text, (ref,), missing="the report needs the trust bundle's crl.pem to judge it")
    crls = _signed_by_bundle(bundle)
    if not crls:
        text = f"trust bundle {where} holds {len(bundle.crls)} CRL(s), none signed by a CA of its bundle"
        return Finding(Verdict.NOT_MET, text, (ref,), missing="the operator re-signs the CRLs: check that it runs")
    next_updates = [c.next_update_utc for c in crls]
    soonest = min((n for n in next_updates if n is not None), default=None)
    revoked = len({entry.serial_number for crl in crls for entry in crl})
    last = max(c.last_update_utc for c in crls)
    figures = f"{len(crls)} CRL(s), {revoked} revoked certificate(s), issued {ago(now, last)}"
    if soonest is None or soonest <= now:
        expired = f"expired {ago(now, soonest)}" if soonest is not None else "has no nextUpdate"
        text = f"CRL in {where} {expired} ({figures}): brokers that check CRLs reject every device"
        return Finding(Verdict.NOT_MET, text, (ref,), last, "the operator re-signs CRLs daily: check that it runs")
    text = f"CA bundle and CRL published in {where}: {figures}, next update in {span(soonest - now)}"
    return Finding(Verdict.MET, text, (ref,), last)


def _signed_by_bundle(bundle: _Bundle) -> list[x509.CertificateRevocationList]:
    """The CRLs a CA of the bundle signed (all of them when the bundle's certificates were not read)."""
    if not bundle.certificates:
        return list(bundle.crls)
    return [crl for crl in bundle.crls if any(_crl_signed_by(crl, ca) for ca in bundle.certificates)]


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if crl.issuer != ca.subject:
        return False
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _strength_findings(tenant: Mapping[str, Any], bundles: Sequence[_Bundle]) -> list[Finding]:
    ref = ObjectRef.of(tenant)
    spec = _spec(tenant)
    ca_algorithm = str((spec.get("deviceCA") or {}).get("keyAlgorithm") or "ecdsa-p256")
    classes = [f"{c.get('name')}: {c.get('keyAlgorithm') or 'ecdsa-p256'}" for c in spec.get("deviceClasses") or ()]
    declared = (
        f"CA {ca_algorithm}; device classes {', '.join(classes) or 'none declared'} (the schema allows only "
        "ECDSA P-256/P-384, Ed25519 and RSA ≥ 3072)"
    )
    seen = [(b, cert) for b in bundles for cert in b.certificates]
    if not seen:
        if "/" not in str(_status(tenant).get("deviceCASecret") or ""):
            return [Finding(Verdict.NOT_MET, f"no device CA yet; declared {declared}", (ref,))]
        return [Finding(Verdict.MET, f"device CA issued by the operator; declared {declared}", (ref,))]
    findings: dict[bytes, Finding] = {}  # one per CA: the same bundle is published in every tenant namespace
    for bundle, cert in seen:
        weakness = _weakness(cert)
        text = f"CA {cert.subject.rfc4514_string()} in {bundle.namespace}/{TRUST_BUNDLE}: {_describe_key(cert)}"
        cm = ObjectRef("v1", "ConfigMap", TRUST_BUNDLE, bundle.namespace)
        if weakness:
            finding = Finding(Verdict.NOT_MET, f"{text}: {weakness}", (ref, cm), missing="rotate to a strong CA")
        else:
            finding = Finding(Verdict.MET, text, (ref, cm))
        findings.setdefault(cert.fingerprint(hashes.SHA256()), finding)
    return list(findings.values())


def _describe_key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    hash_name = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else "none (EdDSA)"
    if isinstance(key, rsa.RSAPublicKey):
        kind = f"RSA {key.key_size} bit"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        kind = f"EC {key.curve.name}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        kind = "Ed25519"
    elif isinstance(key, ed448.Ed448PublicKey):
        kind = "Ed448"
    else:
        kind = type(key).__name__
    return f"{kind}, signed with {hash_name}"


def _weakness(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return f"RSA key of {key.key_size} bits (< 2048)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in STRONG_CURVES:
        return f"curve {key.curve.name} is not P-256 or stronger"
    algorithm = cert.signature_hash_algorithm
    if algorithm is not None and algorithm.name in ("md5", "sha1", "sha224"):
        return f"signed with {algorithm.name}"
    return None


# ---------------------------------------------------------------- device identities and device classes


REGISTRY_PREFIX = "iotsec-device-registry-"  # iotsec.model.platform.device_registry_name(tenant id)
SUBJECT = "device id (CN, serialNumber), manufacturer (O), device class and tenant (OU), model (title)"


def device_identity(inventory: Inventory) -> Iterator[Assessment]:
    """9.1.1.3-1 (each device certificate binds a unique device id and its attributes: iotsec writes them into the
    subject and records every serial against its device id in the tenant's registry) and 9.1.2-3 (device classes
    declared as certificate profiles), per tenant. The certificates themselves are on the devices: the report reads
    the registry and the tenant's status, never the CA's Secret data."""
    mechanism = "TenantIsolation deviceClasses and status, the device registry ConfigMap"
    index = Index.of(inventory, ("ConfigMap",))
    for tenant in tenants(inventory):
        scope, ref = tenant_scope(tenant), ObjectRef.of(tenant)
        classes = [c for c in _spec(tenant).get("deviceClasses") or () if isinstance(c, Mapping)]
        yield _device_classes(inventory, tenant, scope, ref, classes, mechanism)
        if inventory.mode == "files":
            declared = f"{len(classes)} device classes declared; certificate subjects carry {SUBJECT}"
            yield offline(C_DEVICE_IDENTITY, scope, declared, (ref,), mechanism)
            continue
        yield assess(C_DEVICE_IDENTITY, scope, [_identity_finding(inventory, index, tenant, classes)], mechanism)


def _device_classes(
    inventory: Inventory,
    tenant: Mapping[str, Any],
    scope: Scope,
    ref: ObjectRef,
    classes: Sequence[Mapping[str, Any]],
    mechanism: str,
) -> Assessment:
    if not classes:
        why = "no device class declared: iotsec issues device certificates only to a declared class"
        return not_applicable(C_DEVICE_CLASSES, scope, why, (ref,), mechanism)
    profiles = "; ".join(_profile(c) for c in classes)
    text = f"{len(classes)} device classes, each a certificate profile: {profiles}"
    if inventory.mode == "files":
        return offline(C_DEVICE_CLASSES, scope, text, (ref,), mechanism)
    if "/" not in str(_status(tenant).get("deviceCASecret") or ""):
        text = f"{text}; but no device CA is recorded, so no profile is issued"
        missing = "check the TenantIsolation's Ready condition"
        return Assessment(C_DEVICE_CLASSES, scope, Verdict.NOT_MET, text, (Evidence(text, (ref,)),), missing, mechanism)
    gap = control_gap(C_DEVICE_CLASSES)
    return Assessment(C_DEVICE_CLASSES, scope, Verdict.PARTIAL, text, (Evidence(text, (ref,)),), gap, mechanism)


def _profile(device_class: Mapping[str, Any]) -> str:
    usages = [*(device_class.get("keyUsage") or ["digitalSignature"])]
    extended = [*(device_class.get("extendedKeyUsage") or ["clientAuth"])]
    return (
        f"{device_class.get('name')}: {device_class.get('keyAlgorithm') or 'ecdsa-p256'}, "
        f"{'/'.join(usages)} + {'/'.join(extended)}, valid {device_class.get('validity') or '365d'}"
    )


def control_gap(control_id: str) -> str:
    """What the catalog says iotsec does not do about `control_id` (a partial control's missing part)."""
    return next((c.missing for c in CONTROLS if c.id == control_id), "")


def _identity_finding(
    inventory: Inventory, index: Index, tenant: Mapping[str, Any], classes: Sequence[Mapping[str, Any]]
) -> Finding:
    status = _status(tenant)
    refs: tuple[ObjectRef, ...] = (ObjectRef.of(tenant),)
    tenant_id = str(_spec(tenant).get("tenantID", ""))
    if "/" not in str(status.get("deviceCASecret") or ""):
        text = "no device CA recorded: no device can get a certificate bound to its id"
        return Finding(Verdict.NOT_MET, text, refs, missing="check the TenantIsolation's Ready condition")
    recorded = str(status.get("deviceRegistry") or "")
    namespace, name = recorded.split("/", 1) if "/" in recorded else (None, REGISTRY_PREFIX + tenant_id)
    found = _registry(index, tenant_id, namespace, name)
    where = f"{namespace}/{name}" if namespace else name
    if found is None:
        why = unavailable(inventory, "ConfigMap")
        if why is not None:
            return Finding(Verdict.PARTIAL, f"device registry {where} not observable: {why}", refs, missing=why)
        if not classes:
            return Finding(Verdict.NOT_APPLICABLE, "no device class declared and no device enrolled", refs)
        text = f"no device enrolled yet (no registry {where}); certificates iotsec issues carry {SUBJECT}"
        return Finding(Verdict.NOT_APPLICABLE, text, refs)
    refs = (*refs, ObjectRef.of(found))
    entries = _registry_entries(found)
    if entries is None:
        keys = ", ".join(found.get("dataKeys") or ()) or "none"
        text = f"device registry {where} present (keys: {keys}); its entries were not read"
        return Finding(Verdict.PARTIAL, text, refs, missing="the report reads the registry's serials (public)")
    issued, revoked = entries
    devices = len(set(issued.values()))
    active = len(issued.keys() - revoked)
    text = (
        f"{len(issued)} device certificates issued to {devices} device ids ({active} not revoked), each serial "
        f"recorded against its device id in {where}; subjects carry {SUBJECT}, issued by CA {tenant_id}"
    )
    if not issued:
        return Finding(Verdict.NOT_APPLICABLE, f"no device enrolled yet ({where} is empty)", refs)
    unnamed = sorted(serial for serial, device in issued.items() if not device)
    if unnamed:
        text = f"{len(unnamed)} serial(s) in {where} bound to no device id: {', '.join(unnamed[:SHOWN_SERIALS])}"
        return Finding(Verdict.NOT_MET, text, refs, missing="revoke certificates that name no device")
    return Finding(Verdict.MET, text, refs)


SHOWN_SERIALS = 5


def _registry(index: Index, tenant_id: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    if namespace is not None:
        return index.get("ConfigMap", name, namespace)
    for (kind, _, found_name), obj in index.named.items():
        labels = _meta(obj).get("labels") or {}
        if kind == "ConfigMap" and found_name == name and labels.get(TENANT_LABEL) in (None, tenant_id):
            return obj
    return None


def _registry_entries(registry: Mapping[str, Any]) -> tuple[dict[str, str], set[str]] | None:
    """(serial -> device id, revoked serials) from the registry's data; None when its data was not read."""
    data = registry.get("data")
    if not isinstance(data, Mapping) or "issued" not in data:
        return None
    try:
        issued, revoked = json.loads(data["issued"]), json.loads(data.get("revoked") or "{}")
    except (TypeError, ValueError):
        return None
    if not isinstance(issued, dict) or not isinstance(revoked, dict):
        return None
    return {str(k): str(v or "") for k, v in issued.items()}, {str(k) for k in revoked}


# ---------------------------------------------------------------- backups


WINDOW_DAYS = 8 * 366


@functools.lru_cache(maxsize=256)
def schedule_period(schedule: str) -> timedelta | None:
    """The longest gap between two runs of a cron schedule (None when it is not one or never runs): over eight years
    from a fixed date, so monthly, leap-day and day-of-week schedules get their true worst case."""
    text = {
        "@hourly": "0 * * * *",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *",
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
    }.get(schedule.strip(), schedule.strip())
    try:
        validate_cron(text)
    except CronError:
        return None
    minute, hour, dom, month, dow = text.split()
    minutes = sorted(h * 60 + m for h in _expand(hour, 0, 23, {}) for m in _expand(minute, 0, 59, {}))
    months, days = _expand(month, 1, 12, _MONTHS), _expand(dom, 1, 31, {})
    weekdays = {d % 7 for d in _expand(dow, 0, 7, _WEEKDAYS)}
    either = not dom.startswith("*") and not dow.startswith("*")  # cron: both restricted means either matches
    start, runs = date(2024, 1, 1), []
    for offset in range(WINDOW_DAYS):
        day = start + timedelta(days=offset)
        in_month, by_dom, by_dow = day.month in months, day.day in days, (day.isoweekday() % 7) in weekdays
        if in_month and ((by_dom or by_dow) if either else (by_dom and by_dow)):
            runs.append(offset)
    if not runs or not minutes:
        return None
    if len(runs) == 1:
        return timedelta(days=WINDOW_DAYS)
    gaps = [b - a for a, b in itertools.pairwise(minutes)]
    gaps += [(d2 - d1) * 1440 + minutes[0] - minutes[-1] for d1, d2 in itertools.pairwise(runs)]
    return timedelta(minutes=max(gaps or [1440]))


_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_WEEKDAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}


def _expand(field: str, low: int, high: int, names: Mapping[str, int]) -> set[int]:
    def value(token: str) -> int:
        return names[token.upper()] if token.upper() in names else int(token)

    values: set[int] = set()
    for item in field.split(","):
        base, _, step = item.partition("/")
        every = int(step) if step else 1
        if base in ("*", "?"):
            first, last = low, high
        else:
            a, _, b = base.partition("-")
            first = value(a)
            last = value(b) if b else (high if step else first)
        values.update(range(first, last + 1, every))
    return values


def backups(inventory: Inventory) -> Iterator[Assessment]:
    """9.2-1, 9.2.4-4, 9.2.4-3, 9.2.4-5 (and the drill controls 9.6.1-2, 9.6.6-2) per namespace: from each
    BackupPolicy's status; member namespaces holding PVCs that no BackupPolicy covers are not-met for 9.2-1."""
    mechanism = "BackupPolicy status (lastSuccess, lastVerified, lastRestoreSeconds, conditions)"
    group, index = members(inventory), Index.of(inventory, ("PersistentVolumeClaim",))
    policies: dict[str, list[dict[str, Any]]] = {}
    for policy in view(inventory).objects_of("BackupPolicy", GROUP):
        policies.setdefault(str(_meta(policy).get("namespace", "")), []).append(policy)
    for namespace in sorted(set(policies) | set(group.of)):
        scope = group.scope(namespace)
        own = policies.get(namespace, [])
        claims = index.in_namespace("PersistentVolumeClaim", namespace)
        if not own:
            yield from _uncovered(inventory, scope, claims, mechanism)
            continue
        if inventory.mode == "files":
            refs = tuple(ObjectRef.of(p) for p in own)
            declared = f"{len(own)} BackupPolicy(ies): schedule {', '.join(str(_spec(p).get('schedule')) for p in own)}"
            for control in (C_BACKUP, C_BACKUP_RESTORE, C_INTEGRITY, C_ARCHIVE, C_DRILLS, C_FAST_RESTORE, C_OFFSITE):
                yield offline(control, scope, declared, refs, mechanism)
            continue
        now: datetime = inventory.now
        backup = [_backup_finding(now, p) for p in own]
        drill = [_drill_finding(now, p) for p in own]
        yield assess(C_BACKUP, scope, backup + _coverage(own, claims), mechanism)
        yield assess(C_BACKUP_RESTORE, scope, backup + drill, mechanism)
        yield assess(C_INTEGRITY, scope, [_verify_finding(now, p) for p in own], mechanism)
        yield assess(C_ARCHIVE, scope, [_retention_finding(p, f) for p, f in zip(own, backup, strict=True)], mechanism)
        yield assess(C_DRILLS, scope, drill, mechanism)
        yield assess(C_FAST_RESTORE, scope, drill, mechanism)
        yield assess(C_OFFSITE, scope, [_offsite_finding(p, f) for p, f in zip(own, backup, strict=True)], mechanism)


def _uncovered(
    inventory: Inventory, scope: Scope, claims: Sequence[Mapping[str, Any]], mechanism: str
) -> Iterator[Assessment]:
    refs = tuple(ObjectRef.of(c) for c in claims)
    if not claims:
        why = "no PersistentVolumeClaims in the namespace: no data to back up"
        if unavailable(inventory, "PersistentVolumeClaim"):
            why = f"PersistentVolumeClaims not observable: {unavailable(inventory, 'PersistentVolumeClaim')}"
            yield Assessment(C_BACKUP, scope, Verdict.PARTIAL, why, (Evidence(why),), why, mechanism)
            return
        yield not_applicable(C_BACKUP, scope, why, (), mechanism)
        return
    names = ", ".join(_name(c) for c in claims)
    text = f"{len(claims)} PersistentVolumeClaim(s) ({names}) and no BackupPolicy in the namespace"
    missing = "create a BackupPolicy selecting these claims (schedule, retention, verification, restore drill)"
    verdict, hidden = Verdict.NOT_MET, unavailable(inventory, "BackupPolicy", GROUP)
    if hidden is not None:  # a policy may exist that the report cannot see
        verdict, text, missing = Verdict.PARTIAL, f"{text} observable (BackupPolicies unreadable: {hidden})", hidden
    for control in (C_BACKUP, C_BACKUP_RESTORE):
        yield Assessment(control, scope, verdict, text, (Evidence(text, refs),), missing, mechanism)


def _coverage(policies: Sequence[Mapping[str, Any]], claims: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Claims of the namespace no policy selects (claims holding a local repository are the backups themselves)."""
    repositories = {t.get("claimName") for p in policies for t in _spec(p).get("targets") or () if t.get("claimName")}
    left = [c for c in claims if _name(c) not in repositories and not any(_selects(p, c) for p in policies)]
    if not left:
        return []
    text = f"not covered by any BackupPolicy: {', '.join(_name(c) for c in left)}"
    missing = "add the claims to a BackupPolicy (pvcNames or pvcSelector)"
    return [Finding(Verdict.NOT_MET, text, tuple(ObjectRef.of(c) for c in left), missing=missing)]


def _selects(policy: Mapping[str, Any], claim: Mapping[str, Any]) -> bool:
    spec = _spec(policy)
    if _name(claim) in (spec.get("pvcNames") or ()):
        return True
    selector = spec.get("pvcSelector")
    labels = _meta(claim).get("labels") or {}
    return selector is not None and selectors.selected(selectors.requirements(selector), labels)


def _period(schedule: Any) -> tuple[timedelta, str]:
    period = schedule_period(str(schedule or ""))
    return (period, f"every {span(period)}") if period else (timedelta(days=1), f"schedule {schedule!r} unreadable")


def _backup_finding(now: datetime, policy: Mapping[str, Any]) -> Finding:
    spec, status = _spec(policy), _status(policy)
    refs = (ObjectRef.of(policy),)
    where = f"BackupPolicy {_meta(policy).get('namespace')}/{_name(policy)}"
    period, every = _period(spec.get("schedule"))
    schedule = f"schedule {spec.get('schedule')} ({every})"
    ready, outcome = condition(policy, "Ready"), condition(policy, "BackupSucceeded")
    success = when(status.get("lastSuccess"))
    if _is(ready, "False"):
        text = f"{where} not scheduled: {(ready or {}).get('message', '')}"
        return Finding(
            Verdict.NOT_MET, text, refs, success, "the CronJobs must run (batch/v1 CronJob, Kubernetes 1.21+)"
        )
    if spec.get("suspend"):
        return Finding(Verdict.PARTIAL, f"{where} is suspended; {schedule}", refs, success, "resume the policy")
    if _is(outcome, "False"):
        text = f"{where}: last backup failed: {(outcome or {}).get('message', '')}"
        return Finding(Verdict.NOT_MET, text, refs, when((outcome or {}).get("lastTransitionTime")), "fix the failure")
    figures = _backup_figures(status)
    if success is None:
        created = when(_meta(policy).get("creationTimestamp"))
        if created is not None and now - created < FRESH_FACTOR * period:
            text = f"{where}: no backup yet, policy created {ago(now, created)}, {schedule}"
            return Finding(Verdict.PARTIAL, text, refs, created, "awaiting the first scheduled backup")
        return Finding(
            Verdict.NOT_MET, f"{where}: no successful backup ever; {schedule}", refs, missing="check the Jobs"
        )
    if now - success > FRESH_FACTOR * period:
        text = f"{where}: last success {ago(now, success)}, stale for {schedule}{figures}"
        return Finding(Verdict.NOT_MET, text, refs, success, "backups stopped: check the CronJob and its Jobs")
    return Finding(Verdict.MET, f"{where}: last success {ago(now, success)}, {schedule}{figures}", refs, success)


def _backup_figures(status: Mapping[str, Any]) -> str:
    parts = []
    if status.get("lastDurationSeconds") is not None:
        parts.append(f"took {float(status['lastDurationSeconds']):.0f} s")
    targets = [t for t in status.get("targets") or () if isinstance(t, Mapping)]
    if targets:
        parts.append(", ".join(f"{t.get('name')}: {t.get('snapshots', 0)} snapshots" for t in targets))
    return f" ({'; '.join(parts)})" if parts else ""


def _verify_finding(now: datetime, policy: Mapping[str, Any]) -> Finding:
    spec, status = _spec(policy), _status(policy)
    refs = (ObjectRef.of(policy),)
    where = f"BackupPolicy {_meta(policy).get('namespace')}/{_name(policy)}"
    verification = spec.get("verification") or {}
    if verification.get("enabled") is False:
        text = f"{where}: verification (restic check) disabled"
        return Finding(Verdict.NOT_MET, text, refs, missing="enable spec.verification")
    period, every = _period(verification.get("schedule") or "0 4 * * 0")
    verified, outcome = when(status.get("lastVerified")), condition(policy, "Verified")
    if _is(outcome, "False"):
        text = f"{where}: last verification failed: {(outcome or {}).get('message', '')}"
        missing = "the repository may be damaged: run `restic check` and restore from an off-site copy"
        return Finding(Verdict.NOT_MET, text, refs, when((outcome or {}).get("lastTransitionTime")), missing)
    if verified is None:
        created = when(_meta(policy).get("creationTimestamp"))
        if created is not None and now - created < FRESH_FACTOR * period:
            text = f"{where}: not verified yet (policy created {ago(now, created)}, verification {every})"
            return Finding(Verdict.PARTIAL, text, refs, created, "awaiting the first scheduled verification")
        return Finding(Verdict.NOT_MET, f"{where}: never verified (verification {every})", refs, missing="check Jobs")
    if now - verified > FRESH_FACTOR * period:
        text = f"{where}: last verified {ago(now, verified)}, stale for verification {every}"
        return Finding(Verdict.PARTIAL, text, refs, verified, "verification Jobs stopped: check the CronJob")
    return Finding(
        Verdict.MET, f"{where}: backups verified {ago(now, verified)} (verification {every})", refs, verified
    )


def _drill_finding(now: datetime, policy: Mapping[str, Any]) -> Finding:
    spec, status = _spec(policy), _status(policy)
    refs = (ObjectRef.of(policy),)
    where = f"BackupPolicy {_meta(policy).get('namespace')}/{_name(policy)}"
    drill = spec.get("restoreDrill") or {}
    outcome = condition(policy, "RestoreVerified")
    ran = _job_time(outcome)
    seconds = status.get("lastRestoreSeconds")
    rto = f", measured restore time (RTO) {float(seconds):.0f} s" if seconds is not None else ""
    if _is(outcome, "False"):
        text = f"{where}: last restore drill failed: {(outcome or {}).get('message', '')}"
        return Finding(Verdict.NOT_MET, text, refs, ran, "a restore from these backups does not work: investigate")
    if not drill.get("enabled"):
        text = f"{where}: no restore drill configured; restore path untested{rto}"
        return Finding(Verdict.PARTIAL, text, refs, ran, "enable spec.restoreDrill to test restores on a schedule")
    period, every = _period(drill.get("schedule") or "0 5 1 * *")
    if outcome is None or ran is None:
        text = f"{where}: no restore drill has run yet (drills {every})"
        return Finding(Verdict.PARTIAL, text, refs, missing="await the first scheduled drill")
    if now - ran > FRESH_FACTOR * period:
        text = f"{where}: last restore drill {ago(now, ran)}, stale for drills {every}{rto}"
        return Finding(Verdict.PARTIAL, text, refs, ran, "drill Jobs stopped: check the drill CronJob")
    return Finding(
        Verdict.MET, f"{where}: last restore drill succeeded {ago(now, ran)} (drills {every}){rto}", refs, ran
    )


_JOB_TIME = re.compile(r" (?:succeeded|failed) at (\S+)")


def _job_time(cond: Mapping[str, Any] | None) -> datetime | None:
    """When the Job a backup condition reports finished: its message says `Job <name> succeeded at <time>`."""
    if cond is None:
        return None
    found = _JOB_TIME.search(str(cond.get("message", "")))
    return (when(found.group(1).rstrip(":")) if found else None) or when(cond.get("lastTransitionTime"))


def _offsite_finding(policy: Mapping[str, Any], backup: Finding) -> Finding:
    """9.6.6-1: an off-site target, holding snapshots, copied with backups that are current."""
    where = f"BackupPolicy {_meta(policy).get('namespace')}/{_name(policy)}"
    offsite = [t for t in _spec(policy).get("targets") or () if isinstance(t, Mapping) and t.get("role") == "offsite"]
    if not offsite:
        text = f"{where}: no off-site target: a single repository holds every backup"
        return Finding(Verdict.NOT_MET, text, backup.objects, missing="add a target with role offsite")
    counts = {
        t.get("name"): t.get("snapshots", 0) for t in _status(policy).get("targets") or () if isinstance(t, Mapping)
    }
    figures = ", ".join(
        f"{t.get('name')} ({t.get('repository')}): {counts.get(t.get('name'), 0)} snapshots" for t in offsite
    )
    if not any(counts.get(t.get("name")) for t in offsite):
        text = f"{where}: off-site {figures}: no copy observed yet"
        return Finding(Verdict.PARTIAL, text, backup.objects, backup.observed_at, "check the backup Jobs' copy step")
    if backup.verdict != Verdict.MET:
        text = f"{where}: off-site {figures}, but the backups are not current (see 9.2-1)"
        return Finding(
            Verdict.PARTIAL, text, backup.objects, backup.observed_at, "backups must run for copies to be ready in time"
        )
    return Finding(
        Verdict.MET,
        f"{where}: off-site {figures}, copied with the backup of {stamp(backup.observed_at)}",
        backup.objects,
        backup.observed_at,
    )


def _retention_finding(policy: Mapping[str, Any], backup: Finding) -> Finding:
    retention = _spec(policy).get("retention") or {}
    defaults = {"keepLast": 0, "keepHourly": 0, "keepDaily": 7, "keepWeekly": 4, "keepMonthly": 12, "keepYearly": 0}
    kept = {k: int(retention.get(k, v) or 0) for k, v in defaults.items()}
    figures = ", ".join(f"{k} {v}" for k, v in kept.items() if v)
    where = f"BackupPolicy {_meta(policy).get('namespace')}/{_name(policy)}"
    text = f"{where}: retention {figures or 'keeps everything'} (restic forget --prune after each backup)"
    if not figures:
        return Finding(Verdict.PARTIAL, text, backup.objects, missing="set a retention: nothing is ever pruned")
    if backup.verdict != Verdict.MET:
        return Finding(
            Verdict.PARTIAL,
            text + "; not observed running (no recent backup)",
            backup.objects,
            backup.observed_at,
            "retention runs with the backups: see 9.2-1",
        )
    text += f"; applied with the backup of {stamp(backup.observed_at)}"
    return Finding(Verdict.MET, text, backup.objects, backup.observed_at)


# ---------------------------------------------------------------- audit trail


INTRUSION_TYPES = ("AuthFailures", "UnexpectedSource", "AdmissionDenials", "ExecIntoPod", "PrivilegeGrant")
RULE_TYPES = {
    C_BRUTE_FORCE: ("AuthFailures",),
    C_INVOCATIONS: ("RequestRate",),
    C_INTRUSION: INTRUSION_TYPES,
    C_INTRUSION_DETECTION: INTRUSION_TYPES,
    C_MONITORING: (*INTRUSION_TYPES, "SecretAccess", "RequestRate", "AuditConfigChange"),
}
PARTIAL_WITHOUT_RULES = (C_INTRUSION, C_INTRUSION_DETECTION)  # denials are recorded (audit, metrics) even so
PIPELINE_CONTROLS = (C_SYSTEM_LOG, C_OPERATION_LOG, C_LOG_NOT_LOST, C_ADMIN_ACTIVITY)


def audit_trail(inventory: Inventory) -> Iterator[Assessment]:
    """9.3.1-1 and 9.5.1-2 (logs recorded: canary fresh, store taking writes), 9.2.4-3 and 9.6.4-4 (hash chain
    verified), 9.6.4-2 (not lost), and the anomaly-rule controls 9.1.1.1-5, 9.1.5.5-1, 9.1.4-5, at cluster scope."""
    mechanism = "AuditPolicy status written by the audit sink (lastCanarySeen, ChainIntact, store figures)"
    policies = view(inventory).objects_of("AuditPolicy", GROUP)
    if not policies:
        text = "no AuditPolicy: iotsec records no API server audit trail"
        missing = "create an AuditPolicy and point the API server at its rendered policy and sink"
        why = unavailable(inventory, "AuditPolicy", GROUP)
        if why is not None:
            text = f"no AuditPolicy readable ({why}): iotsec's audit trail is not known to exist"
            missing = "install iotsec's CRDs and create an AuditPolicy, or grant the report read access to them"
        for control in (*PIPELINE_CONTROLS, C_LOG_BACKED_UP, C_LOG_EXPORT, *RULE_TYPES):
            yield Assessment(control, CLUSTER, Verdict.NOT_MET, text, (Evidence(text),), missing, mechanism)
        return
    refs = tuple(ObjectRef.of(p) for p in policies)
    if inventory.mode == "files":
        declared = f"{len(policies)} AuditPolicy(ies) declared"
        for control in (*PIPELINE_CONTROLS, C_INTEGRITY, C_LOG_PROTECTED, C_LOG_EXPORT, C_LOG_TLS):
            yield offline(control, CLUSTER, declared, refs, mechanism)
        yield _backed_up_declared(inventory, policies, mechanism)
        for control, types in RULE_TYPES.items():
            absent = _no_rules(policies, control, types)
            names = ", ".join(_rule_names(p, types) for p in policies if _rules(p, types))
            if absent is None:
                yield offline(control, CLUSTER, f"anomaly rules declared: {names}", refs, mechanism)
            else:
                yield assess(control, CLUSTER, [absent], mechanism)
        return
    now: datetime = inventory.now
    pipeline = {_name(p): _pipeline_finding(now, p) for p in policies}
    store = [_store_finding(p) for p in policies]
    chain = [_chain_finding(now, p) for p in policies]
    for control in PIPELINE_CONTROLS:
        yield assess(control, CLUSTER, [*pipeline.values(), *store], mechanism)
    yield assess(C_INTEGRITY, CLUSTER, chain, mechanism)
    yield assess(C_LOG_PROTECTED, CLUSTER, chain, mechanism)
    yield assess(C_LOG_TLS, CLUSTER, [_tls_finding(p, pipeline[_name(p)]) for p in policies], mechanism)
    yield assess(C_LOG_BACKED_UP, CLUSTER, [_backed_up_finding(inventory, p) for p in policies], mechanism)
    yield assess(C_LOG_EXPORT, CLUSTER, [_export_finding(now, p) for p in policies], mechanism)
    for control, types in RULE_TYPES.items():
        absent = _no_rules(policies, control, types)
        findings = [_rules_finding(now, p, types, pipeline[_name(p)]) for p in policies if _rules(p, types)]
        yield assess(control, CLUSTER, [absent] if absent else findings, mechanism)


def _tls_finding(policy: Mapping[str, Any], pipeline: Finding) -> Finding:
    """9.6.4-6: the sink serves TLS only (build.audit); the canary arriving proves the API server reaches it so."""
    how = str(((_spec(policy).get("sink") or {}).get("authentication")) or "clientCertificate")
    text = f"audit sink of AuditPolicy {_name(policy)} serves TLS only, the API server authenticating by {how}"
    if pipeline.verdict != Verdict.MET:
        return Finding(
            Verdict.PARTIAL,
            f"{text}; no recent delivery observed",
            pipeline.objects,
            pipeline.observed_at,
            "restore the audit pipeline (see 9.3.1-1)",
        )
    return Finding(
        Verdict.MET,
        f"{text}; last canary delivered {stamp(pipeline.observed_at)}",
        pipeline.objects,
        pipeline.observed_at,
    )


def _store_backup(policy: Mapping[str, Any]) -> tuple[str, str] | None:
    ref = _spec(policy).get("backupPolicyRef") or {}
    if not ref.get("name"):
        return None
    namespace = ref.get("namespace") or str(((_status(policy).get("policyConfigMap") or "/").split("/", 1))[0])
    return namespace, str(ref["name"])


def _backed_up_declared(inventory: Inventory, policies: Sequence[Mapping[str, Any]], mechanism: str) -> Assessment:
    named = [p for p in policies if _store_backup(p) is not None]
    refs = tuple(ObjectRef.of(p) for p in policies)
    if not named:
        text = "no AuditPolicy names a BackupPolicy for its store (spec.backupPolicyRef)"
        return Assessment(
            C_LOG_BACKED_UP,
            CLUSTER,
            Verdict.NOT_MET,
            text,
            (Evidence(text, refs),),
            "set spec.backupPolicyRef to a BackupPolicy selecting the store claim",
            mechanism,
        )
    return offline(C_LOG_BACKED_UP, CLUSTER, "the audit store's BackupPolicy is named", refs, mechanism)


def _backed_up_finding(inventory: Inventory, policy: Mapping[str, Any]) -> Finding:
    """9.6.4-3: the BackedUp condition (the named BackupPolicy exists and takes the store claim) and that policy's
    own last success."""
    refs: tuple[ObjectRef, ...] = (ObjectRef.of(policy),)
    where = f"AuditPolicy {_name(policy)}"
    named = _store_backup(policy)
    if named is None:
        return Finding(
            Verdict.NOT_MET,
            f"{where} names no BackupPolicy for its store",
            refs,
            missing="set spec.backupPolicyRef to a BackupPolicy selecting the store claim",
        )
    backed = condition(policy, "BackedUp")
    if _is(backed, "False"):
        return Finding(
            Verdict.NOT_MET,
            f"{where}: {(backed or {}).get('message', '')}",
            refs,
            missing="make the BackupPolicy select the store claim",
        )
    found = next(
        (
            p
            for p in view(inventory).objects_of("BackupPolicy", GROUP)
            if (_meta(p).get("namespace"), _name(p)) == named
        ),
        None,
    )
    if found is None:
        text = f"{where}: BackupPolicy {named[0]}/{named[1]} not found"
        return Finding(Verdict.NOT_MET, text, refs, missing="create it, selecting the store claim")
    backup = _backup_finding(inventory.now, found)
    text = f"{where}: store backed up by BackupPolicy {named[0]}/{named[1]}: {backup.text.split(': ', 1)[-1]}"
    return Finding(backup.verdict, text, (*refs, ObjectRef.of(found)), backup.observed_at, backup.missing)


def _export_finding(now: datetime, policy: Mapping[str, Any]) -> Finding:
    """9.6.4-5: retention configured and records leaving the store (export, or a backup the sink counts)."""
    refs, where = (ObjectRef.of(policy),), f"AuditPolicy {_name(policy)}"
    retention = str(((_spec(policy).get("sink") or {}).get("retention")) or "400d")
    exported = when(_status(policy).get("lastExport"))
    if exported is not None:
        text = f"{where}: segments exported {ago(now, exported)}; retention {retention} deletes exported segments"
        return Finding(Verdict.MET, text, refs, exported)
    if _is(condition(policy, "BackedUp"), "True"):
        text = f"{where}: never exported, but backed up; retention {retention} deletes backed-up segments"
        return Finding(Verdict.MET, text, refs)
    text = f"{where}: retention {retention} configured, but no export or backup observed: nothing can be deleted"
    return Finding(
        Verdict.PARTIAL, text, refs, missing="export the segments (iotsec audit export) or back up the store"
    )


def _rules(policy: Mapping[str, Any], types: tuple[str, ...]) -> list[Mapping[str, Any]]:
    return [r for r in _spec(policy).get("anomalyRules") or () if isinstance(r, Mapping) and r.get("type") in types]


def _rule_names(policy: Mapping[str, Any], types: tuple[str, ...]) -> str:
    return ", ".join(
        f"{r.get('name')} ({r.get('type')}, {r.get('threshold', 1)} in {r.get('window', '5m')})"
        for r in _rules(policy, types)
    )


def _no_rules(policies: Sequence[Mapping[str, Any]], control: str, types: tuple[str, ...]) -> Finding | None:
    """The finding when no AuditPolicy has an anomaly rule of these types (a declared fact, offline too)."""
    if any(_rules(p, types) for p in policies):
        return None
    text = f"no anomaly rule of type {' or '.join(types)} in any AuditPolicy"
    verdict = Verdict.PARTIAL if control in PARTIAL_WITHOUT_RULES else Verdict.NOT_MET
    refs = tuple(ObjectRef.of(p) for p in policies)
    return Finding(verdict, text, refs, missing=f"add an anomalyRules entry of type {types[0]}")


def _canary_limit(policy: Mapping[str, Any]) -> timedelta:
    canary = ((_spec(policy).get("sink") or {}).get("canary")) or {}
    interval = _duration(str(canary.get("interval") or "1m"), timedelta(minutes=1))
    return interval + _duration(str(canary.get("deadline") or "2m"), timedelta(minutes=2)) + SILENCE_MARGIN


def _pipeline_finding(now: datetime, policy: Mapping[str, Any]) -> Finding:
    status, refs = _status(policy), (ObjectRef.of(policy),)
    where = f"AuditPolicy {_name(policy)}"
    seen, limit = when(status.get("lastCanarySeen")), _canary_limit(policy)
    broken, applied = condition(policy, "AuditPipelineBroken"), condition(policy, "Applied")
    records = f"{status.get('records', 0)} records in {status.get('segments', 0)} segments"
    if applied is not None and _is(applied, "False"):
        text = f"{where} not applied: {applied.get('message', '')}"
        return Finding(Verdict.NOT_MET, text, refs, seen, "fix the AuditPolicy (see its Applied condition)")
    if seen is None:
        text = f"{where}: the audit sink has never reported a canary: no audit event is known to arrive"
        return Finding(
            Verdict.NOT_MET, text, refs, missing="configure the API server's audit webhook (iotsec audit policy)"
        )
    if _is(broken, "True") or now - seen > limit:
        why = (broken or {}).get("message") if _is(broken, "True") else f"limit {span(limit)}"
        text = f"{where}: last canary {ago(now, seen)} ({why}): audit events are not arriving"
        return Finding(Verdict.NOT_MET, text, refs, seen, "restore the API server -> sink pipeline")
    return Finding(Verdict.MET, f"{where}: last canary {ago(now, seen)} (limit {span(limit)}), {records}", refs, seen)


def _store_finding(policy: Mapping[str, Any]) -> Finding:
    status, refs = _status(policy), (ObjectRef.of(policy),)
    used, limit = int(status.get("bytesUsed") or 0), int(status.get("bytesLimit") or 0)
    percent = float(status.get("percentUsed") or 0.0)
    refused = status.get("refusedBatches", 0)
    text = f"audit store {percent:.0f}% used ({_bytes(used)} of {_bytes(limit)}), {refused} batches refused"
    if _is(condition(policy, "StorageFull"), "True"):
        return Finding(Verdict.NOT_MET, f"{text}: full, refusing batches", refs, missing="export or enlarge the store")
    if _is(condition(policy, "StorageNearlyFull"), "True"):
        return Finding(Verdict.PARTIAL, f"{text}: nearly full", refs, missing="export segments or enlarge the store")
    return Finding(Verdict.MET, text, refs)


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _chain_finding(now: datetime, policy: Mapping[str, Any]) -> Finding:
    status, refs = _status(policy), (ObjectRef.of(policy),)
    where = f"AuditPolicy {_name(policy)}"
    verified, intact = when(status.get("lastVerified")), condition(policy, "ChainIntact")
    head = f"chain head seq {status.get('chainHeadSeq')}" if status.get("chainHeadSeq") is not None else "no chain head"
    if _is(intact, "False"):
        text = f"{where}: hash chain verification found a break: {(intact or {}).get('message', '')}"
        return Finding(Verdict.NOT_MET, text, refs, verified, "investigate: records were altered or cut off")
    if verified is None:
        text = f"{where}: the sink has not verified the hash chain yet ({head})"
        return Finding(Verdict.NOT_MET, text, refs, missing="the sink verifies sealed segments every 6 h by default")
    limit = FRESH_FACTOR * AUDIT_VERIFY_EVERY
    if now - verified > limit:
        text = f"{where}: hash chain last verified {ago(now, verified)} (stale beyond {span(limit)}; {head})"
        return Finding(Verdict.PARTIAL, text, refs, verified, "the sink's periodic verification stopped: check it")
    return Finding(
        Verdict.MET, f"{where}: hash chain and signatures verified {ago(now, verified)} ({head})", refs, verified
    )


def _rules_finding(now: datetime, policy: Mapping[str, Any], types: tuple[str, ...], pipeline: Finding) -> Finding:
    refs, where, names = (ObjectRef.of(policy),), f"AuditPolicy {_name(policy)}", _rule_names(policy, types)
    rules = {r.get("name") for r in _rules(policy, types)}
    hits = [h for h in _status(policy).get("anomalies") or () if isinstance(h, Mapping) and h.get("rule") in rules]
    last = max((t for t in (when(h.get("lastSeen")) for h in hits) if t is not None), default=None)
    fired = (
        f"; {len(hits)} recent hit(s)" + (f", last {ago(now, last)}" if last else "") if hits else "; no recent hits"
    )
    if pipeline.verdict != Verdict.MET:
        text = f"{where}: rules {names} configured but the audit pipeline is not delivering{fired}"
        return Finding(Verdict.PARTIAL, text, refs, pipeline.observed_at, "restore the audit pipeline (see 9.3.1-1)")
    return Finding(
        Verdict.MET, f"{where}: rules {names} watch live audit events (canary fresh){fired}", refs, pipeline.observed_at
    )


# ---------------------------------------------------------------- what this module answers

ANSWERS: dict[Probe, tuple[str, ...]] = {
    app_keys: (C_APP_KEYS, C_APP_KEY_STRENGTH),
    device_ca: (C_DEVICE_KEYS, C_DEVICE_AUTH, C_DEVICE_KEY_STRENGTH),
    device_identity: (C_DEVICE_IDENTITY, C_DEVICE_CLASSES),
    backups: (C_BACKUP, C_BACKUP_RESTORE, C_INTEGRITY, C_ARCHIVE, C_DRILLS, C_FAST_RESTORE, C_OFFSITE),
    audit_trail: (
        *PIPELINE_CONTROLS,
        C_INTEGRITY,
        C_LOG_PROTECTED,
        C_LOG_TLS,
        C_LOG_BACKED_UP,
        C_LOG_EXPORT,
        *RULE_TYPES,
    ),
}
PROBES: tuple[Probe, ...] = tuple(ANSWERS)
