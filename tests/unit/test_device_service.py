"""`iotsec device issue|revoke|list` against an in-memory API server that enforces resourceVersion preconditions.

The fake holds objects like the API server does: every write bumps the resourceVersion; a server-side apply that
names a resourceVersion fails with 409 when the object changed since; a create fails with 409 when it exists.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from iotsec.cli import main as cli
from iotsec.k8s.kube import ApiError
from iotsec.model.labels import CRL_REQUESTED
from iotsec.model.platform import device_ca_secret_name, device_registry_name
from iotsec.pki.certs import fingerprint
from iotsec.pki.devices import Registry, ensure_device_ca, verify_device
from iotsec.services import devices as device_service
from tests.conftest import run_together

RELEASE = "iotsec-system"
TENANT = "acme"
TENANT_ID = "acme"
THREADS = 20


class FakeKube:
    """The parts of `iotsec.k8s.kube.Kube` the device CLI uses, with the API server's concurrency rules."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self._version = 0
        self._lock = threading.Lock()
        self.annotations: list[dict[str, str | None]] = []
        self.conflicts = 0
        self.first_reads: threading.Barrier | None = None  # holds each racing thread's first registry read
        self._seen: set[int] = set()

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        return obj

    def put(self, obj: dict[str, Any]) -> None:
        with self._lock:
            meta = obj["metadata"]
            self._objects[(obj["kind"], meta.get("namespace"), meta["name"])] = self._bump(copy.deepcopy(obj))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            found = copy.deepcopy(self._objects.get((kind, namespace, name)))
        if self._first_read_of_a_racer(kind):
            self.first_reads.wait(timeout=30)  # every racer has read before anyone writes
        return found

    def _first_read_of_a_racer(self, kind: str) -> bool:
        if kind != "ConfigMap" or self.first_reads is None or threading.current_thread() is threading.main_thread():
            return False
        with self._lock:
            first = threading.get_ident() not in self._seen
            self._seen.add(threading.get_ident())
        return first

    def create(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace"), meta["name"])
        with self._lock:
            if key in self._objects:
                self.conflicts += 1
                return False
            self._objects[key] = self._bump(copy.deepcopy(obj))
            return True

    def apply(self, obj: dict[str, Any], owner: Any = None) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace"), meta["name"])
        with self._lock:
            current = self._objects.get(key)
            wanted = meta.get("resourceVersion")
            if wanted is not None and (current is None or current["metadata"]["resourceVersion"] != wanted):
                self.conflicts += 1
                raise ApiError(f"apply {meta['name']}: 409 Conflict: the object has been modified", 409)
            self._objects[key] = self._bump(copy.deepcopy(obj))
            return copy.deepcopy(self._objects[key])

    def annotate(
        self, api_version: str, kind: str, name: str, annotations: dict[str, str | None], namespace: str | None = None
    ) -> bool:
        with self._lock:
            self.annotations.append(annotations)
        return True


def tenant_object() -> dict[str, Any]:
    spec = {
        "tenantID": TENANT_ID,
        "securityDomain": "core",
        "namespaces": ["acme-a"],
        "deviceClasses": [{"name": "meter", "keyAlgorithm": "ecdsa-p256", "validity": "30d"}],
    }
    return {"apiVersion": "iotsec.io/v1alpha1", "kind": "TenantIsolation", "metadata": {"name": TENANT}, "spec": spec}


@pytest.fixture
def kube():
    fake = FakeKube()
    fake.put(tenant_object())
    now = datetime.now(UTC)
    state, _ = ensure_device_ca(None, TENANT_ID, "ecdsa-p256", timedelta(days=365), timedelta(days=30), now)
    data = {k: base64.b64encode(v.encode()).decode() for k, v in state.to_secret_data().items()}
    secret = {"metadata": {"name": device_ca_secret_name(TENANT_ID), "namespace": RELEASE}, "data": data}
    fake.put({"apiVersion": "v1", "kind": "Secret", **secret})
    fake.ca_state = state
    return fake


def registry_of(kube: FakeKube) -> Registry:
    found = kube.get("v1", "ConfigMap", device_registry_name(TENANT_ID), RELEASE)
    return Registry.from_config_map_data((found or {}).get("data"))


def issue(kube: FakeKube, device_id: str, out: Path) -> dict[str, Any]:
    return device_service.issue(kube, TENANT, device_id, "meter", "ACME", "SM-3", out)  # type: ignore[arg-type]


def test_the_ca_and_registry_are_read_and_written_in_the_release_namespace(kube, tmp_path):
    issued = issue(kube, "meter-1", tmp_path)
    stored = kube.get("v1", "ConfigMap", "iotsec-device-registry-acme", "iotsec-system")
    assert stored is not None
    assert stored["metadata"]["labels"]["iotsec.io/tenant"] == TENANT_ID
    registry = Registry.from_config_map_data(stored["data"])
    assert registry.issued == {issued["serial"]: "meter-1"}
    assert registry.details[issued["serial"]].issuer == fingerprint(kube.ca_state.ca.cert_pem)
    assert issued["issuer"] == fingerprint(kube.ca_state.ca.cert_pem)
    assert kube.get("v1", "ConfigMap", "iotsec-device-registry", "acme-a") is None, "nothing in the tenant's namespace"
    certificate = (tmp_path / "meter-1.crt").read_text()
    assert verify_device(certificate, (tmp_path / "ca-bundle.crt").read_text(), datetime.now(UTC))


def test_another_release_namespace_is_honoured(kube, tmp_path):
    with pytest.raises(
        device_service.DeviceError, match=r"device CA of tenant acme \(elsewhere/iotsec-device-ca-acme\)"
    ):
        device_service.issue(kube, TENANT, "meter-1", "meter", "ACME", "SM-3", tmp_path, namespace="elsewhere")


def test_parallel_issues_lose_no_certificate(kube, tmp_path):
    kube.first_reads = threading.Barrier(THREADS)  # all read the same (missing) registry, then race to write
    results = run_together([lambda i=i: issue(kube, f"meter-{i}", tmp_path / str(i)) for i in range(THREADS)], 60)
    registry = registry_of(kube)
    assert registry.issued == {r["serial"]: r["deviceID"] for r in results}
    assert len(registry.issued) == THREADS
    assert kube.conflicts >= THREADS - 1, "the writers really collided"


def test_parallel_revocations_lose_none(kube, tmp_path):
    serials = [issue(kube, f"meter-{i}", tmp_path)["serial"] for i in range(THREADS)]
    kube.first_reads = threading.Barrier(THREADS)
    run_together([lambda s=s: device_service.revoke(kube, TENANT, s, None) for s in serials], 60)
    registry = registry_of(kube)
    assert set(registry.revoked) == set(serials)
    assert len(registry.issued) == THREADS
    assert len(kube.annotations) == THREADS
    assert all(CRL_REQUESTED in a for a in kube.annotations), "the operator is asked to re-sign at once"


def test_issues_and_revocations_interleaved_lose_nothing(kube, tmp_path):
    early = [issue(kube, f"early-{i}", tmp_path)["serial"] for i in range(THREADS // 2)]
    kube.first_reads = threading.Barrier(THREADS)
    calls = [lambda s=s: device_service.revoke(kube, TENANT, s, None) for s in early]
    calls += [lambda i=i: issue(kube, f"late-{i}", tmp_path / str(i)) for i in range(THREADS // 2)]
    results = run_together(calls, 60)
    registry = registry_of(kube)
    assert set(registry.revoked) == set(early)
    late = {r["serial"] for r in results if isinstance(r, dict)}
    assert set(registry.issued) == set(early) | late
    assert len(registry.issued) == THREADS


def test_revoking_an_unknown_serial_writes_nothing(kube, tmp_path):
    issue(kube, "meter-1", tmp_path)
    before = kube.get("v1", "ConfigMap", device_registry_name(TENANT_ID), RELEASE)
    with pytest.raises(device_service.DeviceError, match="no certificate issued"):
        device_service.revoke(kube, TENANT, 12345, None)
    assert kube.get("v1", "ConfigMap", device_registry_name(TENANT_ID), RELEASE) == before
    assert kube.annotations == []


def test_a_registry_that_never_settles_gives_up_with_a_clear_error(kube, monkeypatch):
    monkeypatch.setattr(device_service, "BACKOFF_CAP", 0.0)

    def always_conflicting(obj, owner=None):
        raise ApiError("409 Conflict", 409)

    kube.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": device_registry_name(TENANT_ID), "namespace": RELEASE},
            "data": Registry({7: "meter-7"}, {}).to_config_map_data(),
        }
    )
    monkeypatch.setattr(kube, "apply", always_conflicting)
    with pytest.raises(device_service.DeviceError, match="kept changing"):
        device_service.revoke(kube, TENANT, 7, None)
    assert kube.annotations == []


def test_an_old_format_registry_is_read_and_extended(kube, tmp_path):
    old_data = {"issued": json.dumps({"7": "meter-7"}), "revoked": json.dumps({"7": "2026-01-01T00:00:00+00:00"})}
    kube.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": device_registry_name(TENANT_ID), "namespace": RELEASE},
            "data": old_data,
        }
    )
    issued = issue(kube, "meter-8", tmp_path)
    registry = registry_of(kube)
    assert registry.issued == {7: "meter-7", issued["serial"]: "meter-8"}
    assert registry.revoked == {7: datetime(2026, 1, 1, tzinfo=UTC)}
    assert 7 not in registry.details
    rows = device_service.list_devices(kube, TENANT)
    assert rows == [
        {"deviceID": "meter-7", "serial": 7, "notAfter": None, "issuer": None, "revoked": "2026-01-01T00:00:00Z"},
        {
            "deviceID": "meter-8",
            "serial": issued["serial"],
            "notAfter": issued["notAfter"].replace("+00:00", "Z"),
            "issuer": fingerprint(kube.ca_state.ca.cert_pem),
            "revoked": None,
        },
    ]


def test_device_list_on_the_command_line(kube, tmp_path, monkeypatch, capsys):
    first = issue(kube, "meter-1", tmp_path)
    issue(kube, "meter-2", tmp_path)
    device_service.revoke(kube, TENANT, None, "meter-1")
    monkeypatch.setattr("iotsec.k8s.kube.Kube", lambda *args, **kwargs: kube)

    assert cli.main(["device", "list", TENANT, "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["deviceID"], r["revoked"] is not None) for r in rows] == [("meter-1", True), ("meter-2", False)]
    assert rows[0]["serial"] == first["serial"]

    assert cli.main(["device", "list", TENANT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["DEVICE", "SERIAL", "NOT-AFTER", "ISSUER", "REVOKED"]
    assert lines[1].split()[:2] == ["meter-1", str(first["serial"])]
    assert lines[1].split()[3] == fingerprint(kube.ca_state.ca.cert_pem)[:16]
    assert lines[2].split()[-1] == "-", "meter-2 is not revoked"

    assert cli.main(["device", "list", TENANT, "--namespace", "elsewhere", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_the_locations_recorded_in_the_tenant_status_are_followed(kube, tmp_path):
    """The operator keeps a tenant's keys where it first put them, even if the release namespace changes later."""
    secret = kube.get("v1", "Secret", device_ca_secret_name(TENANT_ID), RELEASE)
    secret["metadata"] = {"name": device_ca_secret_name(TENANT_ID), "namespace": "old-release"}
    kube.put(secret)
    body = tenant_object()
    body["status"] = {
        "deviceCASecret": f"old-release/{device_ca_secret_name(TENANT_ID)}",
        "deviceRegistry": f"old-release/{device_registry_name(TENANT_ID)}",
    }
    kube.put(body)
    issued = issue(kube, "meter-1", tmp_path)
    stored = kube.get("v1", "ConfigMap", device_registry_name(TENANT_ID), "old-release")
    assert stored is not None
    assert set(Registry.from_config_map_data(stored["data"]).issued) == {issued["serial"]}
    assert kube.get("v1", "ConfigMap", device_registry_name(TENANT_ID), RELEASE) is None
    assert [row["serial"] for row in device_service.list_devices(kube, TENANT)] == [issued["serial"]]
    # an explicit --namespace wins over the status
    assert device_service.list_devices(kube, TENANT, namespace=RELEASE) == []


def _recorded_home(kube: FakeKube, home: str) -> None:
    body = tenant_object()
    body["status"] = {
        "deviceCASecret": f"{home}/{device_ca_secret_name(TENANT_ID)}",
        "deviceRegistry": f"{home}/{device_registry_name(TENANT_ID)}",
    }
    kube.put(body)


def test_issue_and_revoke_refuse_a_namespace_other_than_the_recorded_home(kube, tmp_path, monkeypatch, capsys):
    _recorded_home(kube, RELEASE)
    issued = issue(kube, "meter-1", tmp_path)
    monkeypatch.setattr("iotsec.k8s.kube.Kube", lambda *args, **kwargs: kube)
    before = copy.deepcopy(kube._objects)
    common = ["--tenant", TENANT, "--namespace", "elsewhere"]
    issue_args = ["--device-id", "meter-2", "--class", "meter", "--manufacturer", "ACME", "--model", "SM-3"]
    assert cli.main(["device", "issue", *common, *issue_args, "--out", str(tmp_path / "x")]) == 2
    assert f"keeps its device CA and registry in namespace {RELEASE}" in capsys.readouterr().err
    assert cli.main(["device", "revoke", *common, "--serial", str(issued["serial"])]) == 2
    assert "leave --namespace out" in capsys.readouterr().err
    assert kube._objects == before, "nothing written anywhere"
    assert not (tmp_path / "x").exists()

    # the recorded home itself is fine
    device_service.revoke(kube, TENANT, issued["serial"], None, namespace=RELEASE)
    assert set(registry_of(kube).revoked) == {issued["serial"]}
