"""Runtime probes of the conformance report: verdicts from the status the operator, the backup Jobs and the audit
sink write (shapes copied from controllers/tenant.py, controllers/backup.py, servers/auditsink/reporter.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from iotsec.conformance import runtime
from iotsec.conformance.model import Assessment, Inventory, ObjectRef, Verdict
from iotsec.model.controls import CONTROLS
from iotsec.model.pem import certificate_pem
from iotsec.model.time import rfc3339
from iotsec.pki import devices

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def at(**delta: float) -> str:
    """RFC 3339 of NOW + delta (negative for the past)."""
    return rfc3339(NOW + timedelta(**delta))


def inventory(*objects: dict[str, Any], mode: str = "cluster", unavailable: dict[str, str] | None = None) -> Inventory:
    return Inventory(mode, NOW, objects=list(objects), unavailable=dict(unavailable or {}))  # type: ignore[arg-type]


def only(found: Iterable[Assessment], control: str, kind: str = "tenant", name: str | None = None) -> Assessment:
    matches = [a for a in found if a.control == control and a.scope.kind == kind and name in (None, a.scope.name)]
    assert len(matches) == 1, [(a.control, a.scope) for a in found]
    return matches[0]


def cond(type_: str, status: bool, reason: str = "R", message: str = "", when: str | None = None) -> dict[str, Any]:
    out = {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message}
    out["lastTransitionTime"] = when or at(hours=-1)
    return out


# ---------------------------------------------------------------- tenants and keys


def tenant(
    applications: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    namespaces: tuple[str, ...] = ("acme-prod",),
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "TenantIsolation",
        "metadata": {"name": "acme", "generation": 1},
        "spec": {"tenantID": "acme", "securityDomain": "plant", "namespaces": list(namespaces), **(spec or {})},
    }
    if applications is not None:
        body["spec"]["applications"] = applications
    if status is not None:
        body["status"] = status
    return body


def app(name: str, rotation: str = "90d", algorithm: str = "ed25519") -> dict[str, Any]:
    return {
        "name": name,
        "class": "ingest",
        "namespace": "acme-prod",
        "keyRotation": rotation,
        "keyAlgorithm": algorithm,
    }


def app_status(name: str, created_days_ago: float, next_in_days: float) -> dict[str, Any]:
    # as controllers/tenant.py::_application_status writes it
    return {
        "name": name,
        "appID": f"acme.{name}",
        "serviceAccount": name,
        "keySecret": f"iotsec-app-{name}-key",
        "keyCreated": at(days=-created_days_ago),
        "nextRotation": at(days=next_in_days),
    }


def key_secret(name: str, namespace: str = "acme-prod") -> dict[str, Any]:
    # as services/inventory.py keeps it: metadata and key names only
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"iotsec-app-{name}-key",
            "namespace": namespace,
            "creationTimestamp": at(days=-200),
            "labels": {"iotsec.io/key-purpose": "app-key", "iotsec.io/tenant": "acme"},
        },
        "type": "Opaque",
        "dataKeys": ["algorithm", "created", "key-id", "public", "secret"],
    }


KEYS_CURRENT = cond("KeysRotated", True, "KeysCurrent", "2 keys within period")


def test_current_keys_are_met_with_their_ages_and_next_rotation() -> None:
    body = tenant(
        [app("ingest"), app("billing", "30d", "hmac-sha256")],
        {"applications": [app_status("billing", 10, 20), app_status("ingest", 20, 70)], "conditions": [KEYS_CURRENT]},
    )
    found = list(runtime.app_keys(inventory(body, key_secret("ingest"), key_secret("billing"))))
    tenant_scope = only(found, runtime.C_APP_KEYS)
    assert tenant_scope.verdict == Verdict.MET
    assert (tenant_scope.scope.domain, tenant_scope.scope.tenant) == ("plant", "acme")
    texts = [e.text for e in tenant_scope.evidence]
    assert any("app ingest: key created 20 d ago, rotation every 90d, next rotation in 70 d" in t for t in texts)
    assert ObjectRef("v1", "Secret", "iotsec-app-ingest-key", "acme-prod") in tenant_scope.evidence[0].objects + (
        tenant_scope.evidence[1].objects
    )
    assert tenant_scope.evidence[0].observed_at is not None
    namespace_scope = only(found, runtime.C_APP_KEYS, "namespace", "acme-prod")
    assert namespace_scope.verdict == Verdict.MET
    assert namespace_scope.scope.tenant == "acme"
    strength = only(found, runtime.C_APP_KEY_STRENGTH)
    assert strength.verdict == Verdict.MET
    assert "ed25519 x1" in strength.summary
    assert "hmac-sha256 x1" in strength.summary


def test_an_overdue_rotation_is_not_met_with_how_late() -> None:
    body = tenant([app("ingest")], {"applications": [app_status("ingest", 92, -2)], "conditions": [KEYS_CURRENT]})
    found = only(runtime.app_keys(inventory(body, key_secret("ingest"))), runtime.C_APP_KEYS)
    assert found.verdict == Verdict.NOT_MET
    assert "rotation overdue by 2 d" in found.summary
    assert found.missing


def test_overdue_is_computed_from_the_key_age_when_next_rotation_is_absent() -> None:
    entry = {**app_status("ingest", 31, 0), "nextRotation": None}
    body = tenant([app("ingest", "30d")], {"applications": [entry]})
    found = only(runtime.app_keys(inventory(body, key_secret("ingest"))), runtime.C_APP_KEYS)
    assert found.verdict == Verdict.NOT_MET
    assert "overdue by 24 h" in found.summary


def test_a_missing_key_secret_or_unrecorded_key_is_not_met() -> None:
    body = tenant([app("ingest")], {"applications": [app_status("ingest", 1, 89)]})
    assert only(runtime.app_keys(inventory(body)), runtime.C_APP_KEYS).verdict == Verdict.NOT_MET
    unknown = {"name": "ingest", "appID": "acme.ingest", "keySecret": "iotsec-app-ingest-key"}  # KeyUnreadable
    body = tenant([app("ingest")], {"applications": [unknown]})
    found = only(runtime.app_keys(inventory(body, key_secret("ingest"))), runtime.C_APP_KEYS)
    assert found.verdict == Verdict.NOT_MET
    assert "records no key" in found.summary


def test_keys_rotated_false_is_not_met() -> None:
    failed = cond("KeysRotated", False, "RotationFailed", "cannot write Secret")
    body = tenant([app("ingest")], {"applications": [app_status("ingest", 1, 89)], "conditions": [failed]})
    found = only(runtime.app_keys(inventory(body, key_secret("ingest"))), runtime.C_APP_KEYS)
    assert found.verdict == Verdict.NOT_MET
    assert "KeysRotated=False" in found.summary


def test_secrets_not_listable_make_keys_partial_not_missing() -> None:
    body = tenant([app("ingest")], {"applications": [app_status("ingest", 1, 89)]})
    found = only(runtime.app_keys(inventory(body, unavailable={"/Secret": "forbidden"})), runtime.C_APP_KEYS)
    assert found.verdict == Verdict.PARTIAL
    assert "forbidden" in found.summary


def test_offline_keys_are_partial_never_met() -> None:
    found = list(runtime.app_keys(inventory(tenant([app("ingest")]), mode="files")))
    assert {a.verdict for a in found} == {Verdict.PARTIAL}
    assert all(runtime.OFFLINE in a.summary for a in found)
    assert any(o.planned and o.kind == "Secret" for a in found for e in a.evidence for o in e.objects)


def test_no_applications_is_not_applicable() -> None:
    found = list(runtime.app_keys(inventory(tenant([]))))
    assert {a.verdict for a in found} == {Verdict.NOT_APPLICABLE}


# ---------------------------------------------------------------- device CA, trust bundle, CRL


@pytest.fixture(scope="module")
def ca() -> Any:
    return devices.new_device_ca("acme", "ecdsa-p256", timedelta(days=1825), NOW - timedelta(days=100))


def trust_bundle(cert_pem: str, crl_pem: str, namespace: str = "acme-prod") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "iotsec-device-trust", "namespace": namespace},
        "data": {"ca-bundle.crt": cert_pem, "crl.pem": crl_pem},
    }


def ca_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "iotsec-device-ca-acme", "namespace": "iotsec-system"},
        "dataKeys": ["ca.crt", "ca.key", "ca-bundle.crt"],
    }


def device_tenant(not_after: str) -> dict[str, Any]:
    return tenant(
        status={
            "namespaces": ["acme-prod"],
            "deviceCASecret": "iotsec-system/iotsec-device-ca-acme",
            "deviceCANotAfter": not_after,
            "deviceRegistry": "iotsec-system/iotsec-device-registry-acme",
            "conditions": [cond("Ready", True, "Reconciled")],
        }
    )


def test_a_valid_ca_with_a_fresh_crl_is_met_with_expiry_and_revocations(ca: Any) -> None:
    crl = devices.build_crl(ca, {11: NOW - timedelta(days=3), 12: NOW - timedelta(days=2)}, NOW - timedelta(days=1))
    objects = (device_tenant(at(days=400)), ca_secret(), trust_bundle(ca.cert_pem, crl))
    found = list(runtime.device_ca(inventory(*objects)))
    keys = only(found, runtime.C_DEVICE_KEYS)
    assert keys.verdict == Verdict.MET
    assert "in 400 d" in keys.summary
    auth = only(found, runtime.C_DEVICE_AUTH)
    assert auth.verdict == Verdict.MET
    assert "2 revoked certificate(s)" in auth.summary
    assert "next update in 6 d" in auth.summary
    assert auth.evidence[0].objects == (ObjectRef("v1", "ConfigMap", "iotsec-device-trust", "acme-prod"),)
    strength = only(found, runtime.C_DEVICE_KEY_STRENGTH)
    assert strength.verdict == Verdict.MET
    assert "EC secp256r1" in strength.summary


def test_ca_expiry_soon_is_partial_and_expired_is_not_met(ca: Any) -> None:
    crl = devices.build_crl(ca, {}, NOW - timedelta(hours=1))
    soon = list(runtime.device_ca(inventory(device_tenant(at(days=10)), ca_secret(), trust_bundle(ca.cert_pem, crl))))
    assert only(soon, runtime.C_DEVICE_KEYS).verdict == Verdict.PARTIAL
    gone = list(runtime.device_ca(inventory(device_tenant(at(days=-1)), ca_secret(), trust_bundle(ca.cert_pem, crl))))
    assert only(gone, runtime.C_DEVICE_KEYS).verdict == Verdict.NOT_MET
    assert "expired 24 h ago" in only(gone, runtime.C_DEVICE_KEYS).summary


def test_an_expired_crl_is_not_met(ca: Any) -> None:
    crl = devices.build_crl(ca, {}, NOW - timedelta(days=10), timedelta(days=7))
    found = list(runtime.device_ca(inventory(device_tenant(at(days=400)), ca_secret(), trust_bundle(ca.cert_pem, crl))))
    auth = only(found, runtime.C_DEVICE_AUTH)
    assert auth.verdict == Verdict.NOT_MET
    assert "expired 3 d ago" in auth.summary


def test_a_crl_signed_by_another_ca_does_not_count(ca: Any) -> None:
    other = devices.new_device_ca("acme", "ecdsa-p256", timedelta(days=1825), NOW - timedelta(days=1))
    forged = devices.build_crl(other, {}, NOW - timedelta(hours=1))
    objects = (device_tenant(at(days=400)), ca_secret(), trust_bundle(ca.cert_pem, forged))
    found = only(runtime.device_ca(inventory(*objects)), runtime.C_DEVICE_AUTH)
    assert found.verdict == Verdict.NOT_MET
    assert "none signed by a CA of its bundle" in found.summary


def test_a_bundle_without_data_is_partial_and_a_missing_one_not_met() -> None:
    bare = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "iotsec-device-trust", "namespace": "acme-prod"},
        "dataKeys": ["ca-bundle.crt", "crl.pem"],
    }
    found = only(runtime.device_ca(inventory(device_tenant(at(days=400)), ca_secret(), bare)), runtime.C_DEVICE_AUTH)
    assert found.verdict == Verdict.PARTIAL
    assert "ca-bundle.crt, crl.pem" in found.summary
    missing = only(runtime.device_ca(inventory(device_tenant(at(days=400)), ca_secret())), runtime.C_DEVICE_AUTH)
    assert missing.verdict == Verdict.NOT_MET


def test_a_weak_ca_key_is_not_met() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=100))
        .sign(key, hashes.SHA256())
    )
    bundle = trust_bundle(certificate_pem(cert), "")
    found = only(
        runtime.device_ca(inventory(device_tenant(at(days=100)), ca_secret(), bundle)), runtime.C_DEVICE_KEY_STRENGTH
    )
    assert found.verdict == Verdict.NOT_MET
    assert "RSA key of 1024 bits" in found.summary


def test_no_device_ca_recorded_is_not_met_and_offline_partial() -> None:
    found = list(runtime.device_ca(inventory(tenant(status={"namespaces": ["acme-prod"]}))))
    assert only(found, runtime.C_DEVICE_KEYS).verdict == Verdict.NOT_MET
    offline = list(runtime.device_ca(inventory(tenant(), mode="files")))
    assert {a.verdict for a in offline} == {Verdict.PARTIAL}


# ---------------------------------------------------------------- device identities and classes

SENSOR = {"name": "sensor", "keyUsage": ["digitalSignature"], "extendedKeyUsage": ["clientAuth"], "validity": "90d"}


def registry(issued: dict[str, str] | None, revoked: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "iotsec-device-registry-acme",
            "namespace": "iotsec-system",
            "labels": {"app.kubernetes.io/managed-by": "iotsec", "iotsec.io/tenant": "acme"},
        },
        "dataKeys": ["issued", "revoked"],
    }
    if issued is not None:
        body["data"] = {"issued": json.dumps(issued), "revoked": json.dumps(revoked or {})}
    return body


def classed_tenant(classes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = device_tenant(at(days=400))
    body["spec"]["deviceClasses"] = [SENSOR] if classes is None else classes
    return body


def identity(*objects: dict[str, Any], **kwargs: Any) -> list[Assessment]:
    return list(runtime.device_identity(inventory(*objects, **kwargs)))


def test_devices_recorded_against_their_ids_are_met_with_counts() -> None:
    found = identity(classed_tenant(), registry({"11": "dev-1", "12": "dev-1", "13": "dev-2"}, {"11": at(days=-1)}))
    ids = only(found, runtime.C_DEVICE_IDENTITY)
    assert ids.verdict == Verdict.MET
    assert "3 device certificates issued to 2 device ids (2 not revoked)" in ids.summary
    assert "manufacturer (O)" in ids.summary
    assert ObjectRef("v1", "ConfigMap", "iotsec-device-registry-acme", "iotsec-system") in ids.evidence[0].objects


def test_device_identity_unread_registry_partial_no_ca_not_met_no_devices_not_applicable() -> None:
    unread = only(identity(classed_tenant(), registry(None)), runtime.C_DEVICE_IDENTITY)
    assert unread.verdict == Verdict.PARTIAL
    assert "entries were not read" in unread.summary
    no_ca = {**classed_tenant(), "status": {"namespaces": ["acme-prod"]}}
    assert only(identity(no_ca), runtime.C_DEVICE_IDENTITY).verdict == Verdict.NOT_MET
    assert only(identity(no_ca), runtime.C_DEVICE_CLASSES).verdict == Verdict.NOT_MET
    assert only(identity(classed_tenant()), runtime.C_DEVICE_IDENTITY).verdict == Verdict.NOT_APPLICABLE
    hidden = identity(classed_tenant(), unavailable={"/ConfigMap": "forbidden"})
    assert only(hidden, runtime.C_DEVICE_IDENTITY).verdict == Verdict.PARTIAL
    unnamed = only(identity(classed_tenant(), registry({"14": ""})), runtime.C_DEVICE_IDENTITY)
    assert unnamed.verdict == Verdict.NOT_MET


def test_device_classes_are_profiles_partial_at_best_and_absent_not_applicable() -> None:
    classes = only(identity(classed_tenant()), runtime.C_DEVICE_CLASSES)
    assert classes.verdict == Verdict.PARTIAL  # the catalog's coverage is partial: the broker authorises
    assert "sensor: ecdsa-p256, digitalSignature + clientAuth, valid 90d" in classes.summary
    assert "broker" in classes.missing
    assert only(identity(classed_tenant([])), runtime.C_DEVICE_CLASSES).verdict == Verdict.NOT_APPLICABLE
    offline = identity(classed_tenant(), mode="files")
    assert {a.verdict for a in offline} == {Verdict.PARTIAL}
    assert all(runtime.OFFLINE in a.summary for a in offline)


# ---------------------------------------------------------------- backups


@pytest.mark.parametrize(
    ("schedule", "period"),
    [
        ("0 */6 * * *", timedelta(hours=6)),
        ("@daily", timedelta(days=1)),
        ("30 2 * * 1-5", timedelta(days=3)),  # Friday 02:30 to Monday 02:30
        ("0 5 1 * *", timedelta(days=31)),
        ("0 4 * * 0", timedelta(days=7)),
        ("*/15 * * * *", timedelta(minutes=15)),
    ],
)
def test_schedule_period_is_the_longest_gap(schedule: str, period: timedelta) -> None:
    assert runtime.schedule_period(schedule) == period


def test_schedule_period_of_a_leap_day_and_of_nonsense() -> None:
    leap = runtime.schedule_period("0 0 29 2 *")
    assert leap is not None
    assert leap >= timedelta(days=365 * 4)
    assert runtime.schedule_period("every day") is None


def policy(
    status: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    namespace: str = "acme-prod",
    created: str | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "data", "namespace": namespace, "creationTimestamp": created or at(days=-60)},
        "spec": {
            "schedule": "0 */6 * * *",
            "pvcNames": ["data"],
            "targets": [{"name": "primary", "repository": "s3:https://s3.example/backups"}],
            **(spec or {}),
        },
        "status": status or {},
    }


def claim(name: str = "data", namespace: str = "acme-prod", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
    }


def healthy_status(**extra: Any) -> dict[str, Any]:
    # as controllers/backup.py::_write_status writes it
    return {
        "observedGeneration": 1,
        "lastRun": at(hours=-3, minutes=-2),
        "lastSuccess": at(hours=-3),
        "lastDurationSeconds": 95.0,
        "lastVerified": at(days=-2),
        "targets": [{"name": "primary", "snapshots": 41, "bytes": 123456789}],
        "conditions": [
            cond("Ready", True, "Scheduled", "1 claims, schedule 0 */6 * * *"),
            cond("BackupSucceeded", True, "Succeeded", f"Job data-backup-1 succeeded at {at(hours=-3)}"),
            cond("Verified", True, "Succeeded", f"Job data-verify-1 succeeded at {at(days=-2)}"),
        ],
        **extra,
    }


def backups(*objects: dict[str, Any], mode: str = "cluster") -> list[Assessment]:
    return list(runtime.backups(inventory(tenant(status={"namespaces": ["acme-prod"]}), *objects, mode=mode)))


def test_a_recent_backup_is_met_with_its_age_and_schedule() -> None:
    found = backups(policy(healthy_status()), claim())
    backup = only(found, runtime.C_BACKUP, "namespace")
    assert backup.verdict == Verdict.MET
    assert "last success 3 h ago" in backup.summary
    assert "every 6 h" in backup.summary
    assert backup.scope.tenant == "acme"
    assert backup.scope.domain == "plant"
    assert backup.evidence[0].objects == (ObjectRef("iotsec.io/v1alpha1", "BackupPolicy", "data", "acme-prod"),)
    assert backup.evidence[0].observed_at == at(hours=-3)
    assert only(found, runtime.C_INTEGRITY, "namespace").verdict == Verdict.MET
    archive = only(found, runtime.C_ARCHIVE, "namespace")
    assert archive.verdict == Verdict.MET
    assert "keepDaily 7" in archive.summary


def test_a_stale_a_failed_and_a_missing_backup_are_not_met() -> None:
    stale = only(backups(policy(healthy_status(lastSuccess=at(hours=-13))), claim()), runtime.C_BACKUP, "namespace")
    assert stale.verdict == Verdict.NOT_MET
    assert "last success 13 h ago, stale" in stale.summary
    failed_status = healthy_status()
    failed_status["conditions"][1] = cond("BackupSucceeded", False, "Failed", "Job data-backup-2 failed at x: boom")
    failed = only(backups(policy(failed_status), claim()), runtime.C_BACKUP, "namespace")
    assert failed.verdict == Verdict.NOT_MET
    assert "boom" in failed.summary
    never = only(backups(policy({}), claim()), runtime.C_BACKUP, "namespace")
    assert never.verdict == Verdict.NOT_MET
    assert "no successful backup ever" in never.summary
    new = only(backups(policy({}, created=at(hours=-1)), claim()), runtime.C_BACKUP, "namespace")
    assert new.verdict == Verdict.PARTIAL


def test_restore_drills_with_their_measured_rto() -> None:
    none = only(backups(policy(healthy_status()), claim()), runtime.C_BACKUP_RESTORE, "namespace")
    assert none.verdict == Verdict.PARTIAL
    assert "no restore drill configured" in none.summary
    drilled = healthy_status(lastRestoreSeconds=42.4)
    drilled["conditions"].append(
        cond("RestoreVerified", True, "Succeeded", f"Job data-drill-1 succeeded at {at(days=-5)}", at(days=-90))
    )
    spec = {"restoreDrill": {"enabled": True, "schedule": "0 5 1 * *"}}
    found = backups(policy(drilled, spec), claim())
    both = only(found, runtime.C_BACKUP_RESTORE, "namespace")
    assert both.verdict == Verdict.MET
    drill = only(found, runtime.C_DRILLS, "namespace")
    assert "last restore drill succeeded 5 d ago" in drill.summary
    assert "(RTO) 42 s" in drill.summary
    assert drill.evidence[0].observed_at == at(days=-5)
    drilled["conditions"][-1] = cond("RestoreVerified", False, "Failed", "Job data-drill-2 failed at x: empty")
    assert only(backups(policy(drilled, spec), claim()), runtime.C_FAST_RESTORE, "namespace").verdict == Verdict.NOT_MET


def test_verification_fresh_stale_failed_and_disabled() -> None:
    stale = only(backups(policy(healthy_status(lastVerified=at(days=-20))), claim()), runtime.C_INTEGRITY, "namespace")
    assert stale.verdict == Verdict.PARTIAL
    assert "last verified 20 d ago" in stale.summary
    off = policy(healthy_status(), {"verification": {"enabled": False}})
    assert only(backups(off, claim()), runtime.C_INTEGRITY, "namespace").verdict == Verdict.NOT_MET
    failed = healthy_status()
    failed["conditions"][2] = cond("Verified", False, "Failed", "Job data-verify-2 failed at x: pack damaged")
    assert only(backups(policy(failed), claim()), runtime.C_INTEGRITY, "namespace").verdict == Verdict.NOT_MET


def test_claims_without_a_backup_policy_are_not_met_and_no_claims_not_applicable() -> None:
    found = only(backups(claim("db"), claim("cache")), runtime.C_BACKUP, "namespace")
    assert found.verdict == Verdict.NOT_MET
    assert "db" in found.summary
    assert {o.name for o in found.evidence[0].objects} == {"db", "cache"}
    assert only(backups(), runtime.C_BACKUP, "namespace").verdict == Verdict.NOT_APPLICABLE


def test_a_claim_the_policy_does_not_select_is_named() -> None:
    selecting = policy(healthy_status(), {"pvcNames": None, "pvcSelector": {"matchLabels": {"backup": "yes"}}})
    found = only(
        backups(selecting, claim("data", labels={"backup": "yes"}), claim("logs")), runtime.C_BACKUP, "namespace"
    )
    assert found.verdict == Verdict.NOT_MET
    assert "not covered by any BackupPolicy: logs" in found.summary


def test_offline_backups_are_partial() -> None:
    found = backups(policy(), claim(), mode="files")
    assert {a.verdict for a in found} == {Verdict.PARTIAL}


# ---------------------------------------------------------------- audit trail


def audit_policy(status: dict[str, Any] | None = None, rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "AuditPolicy",
        "metadata": {"name": "cluster", "generation": 2},
        "spec": {"trustedAdminGroups": ["system:masters"], "anomalyRules": rules if rules is not None else RULES},
        "status": status if status is not None else sink_status(),
    }


RULES = [
    {"name": "brute-force", "type": "AuthFailures", "threshold": 10, "window": "5m", "groupBy": "sourceIP"},
    {"name": "flood", "type": "RequestRate", "threshold": 5000, "window": "1m"},
]


def sink_status(**extra: Any) -> dict[str, Any]:
    # as servers/auditsink/reporter.py::sink_status writes it
    return {
        "records": 182345,
        "segments": 31,
        "bytesUsed": 2_147_483_648,
        "bytesLimit": 21_474_836_480,
        "percentUsed": 10.0,
        "chainHead": "ab" * 32,
        "chainHeadSeq": 182344,
        "lastCanarySeen": at(seconds=-40),
        "lastVerified": at(hours=-2),
        "refusedBatches": 0,
        "anomalies": [
            {
                "rule": "brute-force",
                "type": "AuthFailures",
                "subject": "10.0.0.9",
                "count": 12,
                "lastSeen": at(hours=-5),
            }
        ],
        "conditions": [
            cond("Applied", True, "Applied"),
            cond("AuditPipelineBroken", False, "CanaryArrived", f"last canary arrived {at(seconds=-40)}"),
            cond("StorageNearlyFull", False, "BelowWarningLevel"),
            cond("StorageFull", False, "Accepting"),
            cond("ChainIntact", True, "Verified", f"sealed segments verified {at(hours=-2)}"),
        ],
        **extra,
    }


def audit(*objects: dict[str, Any], mode: str = "cluster") -> list[Assessment]:
    return list(runtime.audit_trail(inventory(*objects, mode=mode)))


def test_a_live_audit_trail_is_met_with_canary_age_chain_and_store_use() -> None:
    found = audit(audit_policy())
    log = only(found, runtime.C_SYSTEM_LOG, "cluster")
    assert log.verdict == Verdict.MET
    assert "last canary 40 s ago" in log.summary
    assert "182345 records" in log.summary
    assert "audit store 10% used (2.0 GiB of 20.0 GiB)" in log.summary
    chain = only(found, runtime.C_INTEGRITY, "cluster")
    assert chain.verdict == Verdict.MET
    assert "verified 2 h ago" in chain.summary
    for control in (runtime.C_BRUTE_FORCE, runtime.C_INVOCATIONS, runtime.C_INTRUSION):
        assert only(found, control, "cluster").verdict == Verdict.MET
    assert "1 recent hit(s), last 5 h ago" in only(found, runtime.C_BRUTE_FORCE, "cluster").summary


def test_a_stale_canary_is_not_met_and_makes_the_rules_partial() -> None:
    found = audit(audit_policy(sink_status(lastCanarySeen=at(minutes=-10))))
    log = only(found, runtime.C_OPERATION_LOG, "cluster")
    assert log.verdict == Verdict.NOT_MET
    assert "last canary 10 min ago" in log.summary
    assert only(found, runtime.C_BRUTE_FORCE, "cluster").verdict == Verdict.PARTIAL
    never = audit(audit_policy(sink_status(lastCanarySeen=None)))
    assert only(never, runtime.C_SYSTEM_LOG, "cluster").verdict == Verdict.NOT_MET


def test_a_broken_or_unverified_chain() -> None:
    broken = sink_status()
    broken["conditions"][-1] = cond("ChainIntact", False, "ChainBroken", "segment 7: hash mismatch")
    assert only(audit(audit_policy(broken)), runtime.C_LOG_PROTECTED, "cluster").verdict == Verdict.NOT_MET
    stale = only(audit(audit_policy(sink_status(lastVerified=at(days=-2)))), runtime.C_INTEGRITY, "cluster")
    assert stale.verdict == Verdict.PARTIAL
    assert "last verified 2 d ago" in stale.summary


def test_a_nearly_full_store_is_partial() -> None:
    status = sink_status(percentUsed=85.0)
    status["conditions"][2] = cond("StorageNearlyFull", True, "AboveWarningLevel")
    assert only(audit(audit_policy(status)), runtime.C_OPERATION_LOG, "cluster").verdict == Verdict.PARTIAL


def test_missing_anomaly_rules_and_a_missing_audit_policy() -> None:
    found = audit(audit_policy(rules=[]))
    assert only(found, runtime.C_BRUTE_FORCE, "cluster").verdict == Verdict.NOT_MET
    assert only(found, runtime.C_INTRUSION, "cluster").verdict == Verdict.PARTIAL
    assert only(found, runtime.C_SYSTEM_LOG, "cluster").verdict == Verdict.MET
    none = audit()
    assert only(none, runtime.C_SYSTEM_LOG, "cluster").verdict == Verdict.NOT_MET


def test_offline_audit_is_partial_except_what_the_spec_already_lacks() -> None:
    found = audit(audit_policy({}), mode="files")
    assert only(found, runtime.C_LOG_BACKED_UP, "cluster").verdict == Verdict.NOT_MET  # no backupPolicyRef
    assert {a.verdict for a in found if a.control != runtime.C_LOG_BACKED_UP} == {Verdict.PARTIAL}
    named = audit_policy({})
    named["spec"]["backupPolicyRef"] = {"name": "audit-store", "namespace": "iotsec-audit"}
    assert only(audit(named, mode="files"), runtime.C_LOG_BACKED_UP, "cluster").verdict == Verdict.PARTIAL


def store_backup(status: dict[str, Any]) -> dict[str, Any]:
    found = policy(status, {"pvcNames": ["iotsec-audit-store-cluster"]}, namespace="iotsec-audit")
    found["metadata"]["name"] = "audit-store"
    return found


def test_the_audit_store_backed_up_by_a_current_backup_policy() -> None:
    status = sink_status()
    status["conditions"].append(cond("BackedUp", True, "BackupPolicyFound", "backs up the store claim"))
    named = audit_policy(status)
    named["spec"]["backupPolicyRef"] = {"name": "audit-store", "namespace": "iotsec-audit"}
    found = only(audit(named, store_backup(healthy_status())), runtime.C_LOG_BACKED_UP, "cluster")
    assert found.verdict == Verdict.MET
    assert "store backed up by BackupPolicy iotsec-audit/audit-store: last success 3 h ago" in found.summary
    assert ObjectRef("iotsec.io/v1alpha1", "BackupPolicy", "audit-store", "iotsec-audit") in found.evidence[0].objects
    stale = only(
        audit(named, store_backup(healthy_status(lastSuccess=at(days=-3)))), runtime.C_LOG_BACKED_UP, "cluster"
    )
    assert stale.verdict == Verdict.NOT_MET
    assert only(audit(named), runtime.C_LOG_BACKED_UP, "cluster").verdict == Verdict.NOT_MET  # policy missing
    status["conditions"][-1] = cond("BackedUp", False, "StoreNotSelected", "does not name the store claim")
    unselected = only(audit(named, store_backup(healthy_status())), runtime.C_LOG_BACKED_UP, "cluster")
    assert unselected.verdict == Verdict.NOT_MET
    assert "does not name the store claim" in unselected.summary


def test_export_tls_and_monitoring_of_the_audit_trail() -> None:
    found = audit(audit_policy(sink_status(lastExport=at(days=-6))))
    export = only(found, runtime.C_LOG_EXPORT, "cluster")
    assert export.verdict == Verdict.MET
    assert "exported 6 d ago" in export.summary
    assert only(audit(audit_policy()), runtime.C_LOG_EXPORT, "cluster").verdict == Verdict.PARTIAL
    tls = only(found, runtime.C_LOG_TLS, "cluster")
    assert tls.verdict == Verdict.MET
    assert "clientCertificate" in tls.summary
    silent = audit(audit_policy(sink_status(lastCanarySeen=at(hours=-1))))
    assert only(silent, runtime.C_LOG_TLS, "cluster").verdict == Verdict.PARTIAL
    assert only(found, runtime.C_MONITORING, "cluster").verdict == Verdict.MET
    assert only(found, runtime.C_INTRUSION_DETECTION, "cluster").verdict == Verdict.MET
    assert only(found, runtime.C_ADMIN_ACTIVITY, "cluster").verdict == Verdict.MET


def test_an_offsite_copy_with_snapshots_and_current_backups() -> None:
    targets = [
        {"name": "primary", "repository": "s3:https://s3.example/backups"},
        {"name": "dr", "role": "offsite", "repository": "b2:dr-bucket:/plant"},
    ]
    status = healthy_status(targets=[{"name": "primary", "snapshots": 41}, {"name": "dr", "snapshots": 40}])
    found = only(backups(policy(status, {"targets": targets}), claim()), runtime.C_OFFSITE, "namespace")
    assert found.verdict == Verdict.MET
    assert "dr (b2:dr-bucket:/plant): 40 snapshots" in found.summary
    none = only(backups(policy(healthy_status()), claim()), runtime.C_OFFSITE, "namespace")
    assert none.verdict == Verdict.NOT_MET
    empty = healthy_status(targets=[{"name": "primary", "snapshots": 41}])
    assert only(backups(policy(empty, {"targets": targets}), claim()), runtime.C_OFFSITE, "namespace").verdict == (
        Verdict.PARTIAL
    )


# ---------------------------------------------------------------- what the module answers


def test_each_probe_answers_only_its_declared_catalog_controls(ca: Any) -> None:
    crl = devices.build_crl(ca, {}, NOW)
    objects = (
        tenant([app("ingest")], {"applications": [app_status("ingest", 1, 89)], "namespaces": ["acme-prod"]}),
        key_secret("ingest"),
        trust_bundle(ca.cert_pem, crl),
        policy(healthy_status(), {"restoreDrill": {"enabled": True}}),
        claim(),
        audit_policy(),
    )
    catalog = {c.id for c in CONTROLS}
    for probe, controls in runtime.ANSWERS.items():
        assert set(controls) <= catalog
        for mode in ("cluster", "files"):
            answered = {a.control for a in probe(inventory(*objects, mode=mode))}
            assert answered, probe
            assert answered <= set(controls), probe
    assert tuple(runtime.ANSWERS) == runtime.PROBES


def test_missing_anomaly_rules_are_judged_offline_too() -> None:
    found = audit(audit_policy({}, rules=[]), mode="files")
    assert only(found, runtime.C_BRUTE_FORCE, "cluster").verdict == Verdict.NOT_MET
    assert only(found, runtime.C_INTRUSION, "cluster").verdict == Verdict.PARTIAL
    assert only(found, runtime.C_SYSTEM_LOG, "cluster").verdict == Verdict.PARTIAL


def test_rules_in_one_of_two_audit_policies_are_enough() -> None:
    second = audit_policy(rules=[])
    second["metadata"]["name"] = "edge"
    found = only(audit(audit_policy(), second), runtime.C_BRUTE_FORCE, "cluster")
    assert found.verdict == Verdict.MET
    assert "AuditPolicy cluster: rules brute-force (AuthFailures, 10 in 5m)" in found.summary


def test_a_security_domain_member_namespace_carries_its_domain() -> None:
    """Namespaces a SecurityDomain selects (no labels yet) are resolved as the webhook resolves them."""
    domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": "gateway"},
        "spec": {"zone": "access", "namespaces": ["iot-gateway"], "enforcement": "enforce"},
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "iot-gateway"}}
    found = list(runtime.backups(inventory(domain, namespace, claim("queue", "iot-gateway"))))
    backup = only(found, runtime.C_BACKUP, "namespace", "iot-gateway")
    assert backup.verdict == Verdict.NOT_MET
    assert backup.scope.domain == "gateway"


def test_unreadable_backup_policies_make_uncovered_claims_partial() -> None:
    objects = (tenant(status={"namespaces": ["acme-prod"]}), claim())
    found = list(runtime.backups(inventory(*objects, unavailable={"iotsec.io/BackupPolicy": "forbidden"})))
    backup = only(found, runtime.C_BACKUP, "namespace")
    assert backup.verdict == Verdict.PARTIAL
    assert "forbidden" in backup.summary
