"""Objects a tenant owns, deleted by someone else on a live cluster, are back within seconds, with the operator's
resync ten minutes away: the watch cache sees them go and asks their owner for a reconcile (issue 18's watch
cache, X1369-9.1.1-1's quotas and X1369-9.2.1-1's RBAC kept in place between resyncs)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e import device_tenant, processes
from tests.e2e.conftest import eventually
from tests.e2e.device_tenant import GROUP, VERSION

SUFFIX = uuid.uuid4().hex[:5]
TENANT = f"l{SUFFIX}"
NAMESPACES = [f"{TENANT}-a"]
RESYNC_SECONDS = 600  # no resync during the module: anything put back was put back by the deletion's event
BACK_WITHIN_SECONDS = 15
DOMAIN = f"zone-{TENANT}"
OWNERS = {"TenantIsolation": TENANT, "SecurityDomain": DOMAIN}
# (the kind as the client names it, its owner's kind)
KINDS = [
    ("resource_quota", "TenantIsolation"),
    ("limit_range", "TenantIsolation"),
    ("role_binding", "TenantIsolation"),
    ("role", "TenantIsolation"),
    ("service_account", "TenantIsolation"),
    ("network_policy", "SecurityDomain"),
]


@pytest.fixture(scope="module")
def operator(crds, core, custom, tmp_path_factory) -> Iterator[device_tenant.processes.Operator]:
    log = tmp_path_factory.mktemp("lost") / "operator.log"
    with device_tenant.operator(core, log, NAMESPACES, resync=RESYNC_SECONDS) as running:
        custom.create_cluster_custom_object(GROUP, VERSION, "securitydomains", _domain())
        custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", _tenant())
        try:
            eventually(_reconciled(core), timeout=90, what="tenant and domain reconciled")
            yield running
        finally:
            for plural, name in (("tenantisolations", TENANT), ("securitydomains", DOMAIN)):
                with contextlib.suppress(ApiException):
                    custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)


def _domain() -> dict:
    selector = {"matchLabels": {"iotsec.io/security-domain": DOMAIN}}
    spec = {"zone": "core", "namespaceSelector": selector}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SecurityDomain", "metadata": {"name": DOMAIN}, "spec": spec}


def _tenant() -> dict:
    """A tenant with an application (its ServiceAccount, Role and RoleBinding) and a quota, in DOMAIN."""
    spec = {
        "tenantID": TENANT,
        "securityDomain": DOMAIN,
        "namespaces": NAMESPACES,
        "deletionPolicy": "Shred",
        "applicationClasses": [
            {"name": "ingest", "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}
        ],
        "applications": [{"name": "meter-ingest", "class": "ingest", "namespace": NAMESPACES[0]}],
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TenantIsolation", "metadata": {"name": TENANT}, "spec": spec}


def _api(core: client.CoreV1Api, kind: str):
    if kind.startswith("role"):
        return client.RbacAuthorizationV1Api(core.api_client)
    return client.NetworkingV1Api(core.api_client) if kind == "network_policy" else core


def _owned(core: client.CoreV1Api, kind: str, owner_kind: str) -> dict[str, str]:
    """name -> uid of the objects of `kind` (`resource_quota`, …) the owner has in the tenant's namespace."""
    owned = f"iotsec.io/owner-kind={owner_kind},iotsec.io/owner-name={OWNERS[owner_kind]}"
    items = getattr(_api(core, kind), f"list_namespaced_{kind}")(NAMESPACES[0], label_selector=owned).items
    return {item.metadata.name: item.metadata.uid for item in items}


def _reconciled(core: client.CoreV1Api):
    return lambda: all(_owned(core, kind, owner_kind) for kind, owner_kind in KINDS)


def _lost_total(operator) -> float:
    lines = operator.metrics().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("iotsec_objects_lost_total{"))


def _deleted_and_back(core: client.CoreV1Api, kind: str, owner_kind: str) -> tuple[str, float]:
    """Delete the owner's first object of `kind` in the tenant's namespace, as someone else would, and wait until it
    is there again, a new incarnation (another uid): its name, and the seconds from the deletion until then."""
    before = _owned(core, kind, owner_kind)
    name = sorted(before)[0]
    deleted_at = time.monotonic()
    getattr(_api(core, kind), f"delete_namespaced_{kind}")(name, NAMESPACES[0])

    def back() -> bool:
        now = _owned(core, kind, owner_kind)
        return name in now and now[name] != before[name]

    eventually(back, timeout=BACK_WITHIN_SECONDS, interval=0.2, what=f"{kind} {name} created again")
    return name, time.monotonic() - deleted_at


@pytest.mark.parametrize(("kind", "owner_kind"), KINDS)
def test_an_object_deleted_by_someone_else_is_back_before_any_resync(operator, core, kind, owner_kind):
    namespace, owner = NAMESPACES[0], OWNERS[owner_kind]
    lost_before = _lost_total(operator)
    name, took = _deleted_and_back(core, kind, owner_kind)
    print(f"{kind} {namespace}/{name} back {took:.1f} s after its deletion (resync {RESYNC_SECONDS} s)")
    assert _lost_total(operator) == lost_before + 1, "counted once, though two watches may have seen it"
    log = operator.log_path.read_text(errors="replace")
    assert f"{namespace}/{name} of {owner_kind} {owner} was deleted: reconciling its owner" in log

    def warned() -> bool:
        events = core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={owner}").items
        return any(e.reason == "ManagedObjectDeleted" and f"{namespace}/{name} " in e.message for e in events)

    eventually(warned, timeout=20, what=f"a ManagedObjectDeleted warning on {owner_kind} {owner}")


def test_after_a_restart_what_someone_deletes_is_still_put_back(operator, core):
    """The restarted operator finds every object as it wants it and sends nothing (writes only on change): a
    policy or binding someone deletes afterwards is still known as iotsec's and put back at once."""
    operator.stop()
    default_resync, processes.RESYNC_SECONDS = processes.RESYNC_SECONDS, RESYNC_SECONDS
    log_before = len(operator.log_path.read_text(errors="replace"))
    try:
        operator.start(IOTSEC_WEBHOOK_NAMESPACE=device_tenant.RELEASE)
    finally:
        processes.RESYNC_SECONDS = default_resync

    def resumed() -> bool:
        since = operator.log_path.read_text(errors="replace")[log_before:]
        return all(f"[{owner}] reconciled (success)" in since for owner in OWNERS.values())

    eventually(resumed, timeout=60, what="both owners reconciled after the restart")
    for kind, owner_kind in (("network_policy", "SecurityDomain"), ("role_binding", "TenantIsolation")):
        _deleted_and_back(core, kind, owner_kind)


def test_what_goes_with_its_tenant_is_not_taken_for_a_loss(operator, core, custom):
    """Deleting the tenant (deletionPolicy Shred) deletes its objects and its namespace, whose objects the namespace
    controller then deletes: none of that is someone else's deletion, and nothing asks to put it back."""
    lost_before, log_before = _lost_total(operator), len(operator.log_path.read_text(errors="replace"))
    custom.delete_cluster_custom_object(GROUP, VERSION, "tenantisolations", TENANT)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(NAMESPACES[0])
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(namespace_gone, timeout=90, what=f"namespace {NAMESPACES[0]} deleted")
    time.sleep(2)  # a reconcile asked for by the last deletions would have logged by now
    after = operator.log_path.read_text(errors="replace")[log_before:]
    assert "was deleted: reconciling its owner" not in after, after[-3000:]
    assert _lost_total(operator) == lost_before
