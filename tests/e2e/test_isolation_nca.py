"""Tenant and security-level isolation as the operator applied it, judged by an independent analyzer.

The real operator (`iotsec run`) reconciles the SecurityDomains and TenantIsolations of examples/platform (names
suffixed per run); every NetworkPolicy and Namespace is then read back from the API server as applied, and
network-config-analyzer (nca) computes the connectivity between synthetic pods (not created: the test cluster
enforces no NetworkPolicy anyway). The map must be exactly what the specs declare, and tests/netpol.py's
can_connect must agree with nca. The same analysis without a cluster: tests/unit/test_isolation_nca_render.py.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.api.securitydomain import SecurityDomainSpec
from iotsec.api.tenantisolation import TenantIsolationSpec
from tests.conftest import EXAMPLES
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator
from tests.netpol import (
    Conns,
    Pair,
    Pod,
    Topology,
    allow_all,
    differences,
    evaluator_map,
    restricted,
    run_nca,
)

GROUP, VERSION = "iotsec.io", "v1alpha1"
SUFFIX = uuid.uuid4().hex[:5]
EXAMPLE_FILES = ("00-namespaces.yaml", "10-securitydomains.yaml", "20-tenants.yaml")
EXAMPLE_RELEASE = "iotsec-system"
RELEASE = f"iotsec-{SUFFIX}"  # platform-held keys (tenant device CAs) of this run
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})  # the operator's defaults; the test does not override them
PLURALS = {"SecurityDomain": "securitydomains", "TenantIsolation": "tenantisolations"}
CIDR_EGRESS = {  # a domain whose only rule is egress to a CIDR: test_egress_to_a_cidr_is_reported_ready
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "SecurityDomain",
    "metadata": {"name": f"cidr-egress-{SUFFIX}"},
    "spec": {
        "zone": "support",
        "namespaces": [f"cidr-egress-{SUFFIX}"],
        "egress": [{"name": "offsite", "to": [{"cidr": "198.51.100.10/32"}], "ports": [{"port": 443}]}],
    },
}


def example_platform() -> list[dict[str, Any]]:
    """The example's namespaces, domains and tenants, every name they define suffixed wherever it is used.

    Storage is left out of the tenants: StorageClasses are cluster-wide and have no bearing on the network. The
    core API group "" in RBAC rules becomes "apps": the k8s-testenv server turns "" in custom resources into null.
    """
    docs = [d for name in EXAMPLE_FILES for d in yaml.safe_load_all((EXAMPLES / "platform" / name).read_text()) if d]
    docs = [d for d in docs if d["metadata"]["name"] != EXAMPLE_RELEASE]
    names = {d["metadata"]["name"] for d in docs} | {
        d["spec"]["tenantID"] for d in docs if d["kind"] == "TenantIsolation"
    }

    def suffixed(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: [g or "apps" for g in item] if key == "apiGroups" else suffixed(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [suffixed(item) for item in value]
        return f"{value}-{SUFFIX}" if isinstance(value, str) and value in names else value

    renamed = [suffixed(d) for d in docs]
    for doc in renamed:
        if doc["kind"] == "TenantIsolation":
            doc["spec"].pop("storage", None)
        if doc["kind"] == "SecurityDomain" and doc["spec"].get("egress"):
            # a CIDR egress rule keeps the domain from ever being Ready: test_egress_to_a_cidr_is_reported_ready
            doc["spec"]["egress"] = [r for r in doc["spec"]["egress"] if not any("cidr" in p for p in r["to"])]
    return renamed


@dataclass
class Applied:
    """What the cluster holds once the operator is done, and what the specs declare about it."""

    policies: list[dict[str, Any]]
    ns_labels: dict[str, dict[str, str]]
    topology: Topology
    pods: dict[str, Pod]
    connectivity: dict[Pair, Conns]


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _ready(custom: client.CustomObjectsApi, kind: str, name: str) -> bool:
    body = custom.get_cluster_custom_object(GROUP, VERSION, PLURALS[kind], name)
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c["type"] == "Ready"), {})
    assert ready.get("status") == "True", f"{kind} {name}: {ready or 'no Ready condition yet'}"
    return True


def _gone(custom: client.CustomObjectsApi, kind: str, name: str) -> bool:
    try:
        custom.get_cluster_custom_object(GROUP, VERSION, PLURALS[kind], name)
    except ApiException as exc:
        return exc.status == 404
    return False


@pytest.fixture(scope="module")
def platform(crds, api_client, tmp_path_factory) -> Iterator[list[dict[str, Any]]]:
    """The example platform reconciled by the real operator; everything deleted afterwards.

    Tenants go first and label their namespaces before any domain exists, so every policy a domain applies
    already sees which tenant each namespace belongs to: the state the operator converges to, reached without
    waiting on a resync.
    """
    docs = example_platform()
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    namespaces = [
        *_of_kind(docs, "Namespace"),
        {"metadata": {"name": RELEASE}},
        {"metadata": {"name": f"cidr-egress-{SUFFIX}"}},
    ]
    resources = [*_of_kind(docs, "TenantIsolation"), *_of_kind(docs, "SecurityDomain")]
    operator = Operator(tmp_path_factory.mktemp("isolation") / "operator.log")
    try:
        for namespace in namespaces:
            core.create_namespace(namespace)
        operator.start(IOTSEC_WEBHOOK_NAMESPACE=RELEASE)
        for tenant in _of_kind(docs, "TenantIsolation"):
            custom.create_cluster_custom_object(GROUP, VERSION, PLURALS["TenantIsolation"], tenant)
        for tenant in _of_kind(docs, "TenantIsolation"):
            for namespace in tenant["spec"]["namespaces"]:
                eventually(
                    lambda ns=namespace, t=tenant: (
                        (core.read_namespace(ns).metadata.labels or {}).get("iotsec.io/tenant") == t["spec"]["tenantID"]
                    ),
                    timeout=60,
                    what=f"namespace {namespace} labelled for tenant {tenant['spec']['tenantID']}",
                )
        for domain in [*_of_kind(docs, "SecurityDomain"), CIDR_EGRESS]:
            custom.create_cluster_custom_object(GROUP, VERSION, PLURALS["SecurityDomain"], domain)
        for resource in resources:
            kind, name = resource["kind"], resource["metadata"]["name"]
            eventually(lambda k=kind, n=name: _ready(custom, k, n), timeout=60, what=f"{kind} {name} Ready")
        yield docs
    finally:
        resources.append(CIDR_EGRESS)
        for resource in resources:
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object(
                    GROUP, VERSION, PLURALS[resource["kind"]], resource["metadata"]["name"]
                )
        if operator.process and operator.process.poll() is None:
            for resource in resources:
                kind, name = resource["kind"], resource["metadata"]["name"]
                eventually(lambda k=kind, n=name: _gone(custom, k, n), timeout=60, what=f"{kind} {name} deleted")
        operator.stop()
        for namespace in namespaces:
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace["metadata"]["name"])


def read_back(api_client, namespaces: list[str]) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Every NetworkPolicy in the namespaces, whoever wrote it, and the namespaces' labels, as the server has them.

    kubernetes.io/metadata.name is set by 1.21+ API servers on every namespace (the DNS policy selects on it);
    the 1.20 test server does not set it, so it is added here the way a current server would have it.
    """
    networking, core = client.NetworkingV1Api(api_client), client.CoreV1Api(api_client)
    policies = [
        api_client.sanitize_for_serialization(policy)
        for namespace in namespaces
        for policy in networking.list_namespaced_network_policy(namespace).items
    ]
    labels = {}
    for namespace in [*namespaces, DNS.namespace]:
        found = core.read_namespace(namespace).metadata.labels or {}
        labels[namespace] = {**found, "kubernetes.io/metadata.name": namespace}
    return policies, labels


def analyse(api_client, docs: list[dict[str, Any]], workdir: Path) -> Applied:
    """Read the namespaces of `docs` back, derive what their domains and tenants declare, and run nca."""
    namespaces = [d["metadata"]["name"] for d in _of_kind(docs, "Namespace")]
    policies, ns_labels = read_back(api_client, namespaces)
    domains = {
        d["metadata"]["name"]: SecurityDomainSpec.model_validate(d["spec"]) for d in _of_kind(docs, "SecurityDomain")
    }
    tenants = [TenantIsolationSpec.model_validate(d["spec"]) for d in _of_kind(docs, "TenantIsolation")]
    topology = Topology.declared(domains, tenants, ns_labels, DNS)
    pods = topology.pods(unlabelled=False)  # nca 2.1.0 misreads DoesNotExist peers: see the unit variant
    return Applied(policies, ns_labels, topology, pods, run_nca(policies, ns_labels, pods, workdir))


@pytest.fixture(scope="module")
def applied(platform, api_client, tmp_path_factory) -> Applied:
    return analyse(api_client, platform, tmp_path_factory.mktemp("nca-live"))


def test_the_operator_isolated_every_member_namespace(applied):
    members = applied.topology.member_of
    assert set(members) == set(applied.ns_labels) - {DNS.namespace}, "every namespace of the example joins a domain"
    assert len(set(applied.topology.tenant_of.values())) == 2
    for namespace, domain in members.items():
        names = {p["metadata"]["name"] for p in applied.policies if p["metadata"]["namespace"] == namespace}
        assert f"iotsec-{domain}-default-deny" in names, namespace


def test_nca_sees_exactly_the_declared_connectivity(applied):
    assert differences(applied.connectivity, applied.topology.expected(applied.pods)) == []


def test_no_connection_between_the_tenants(applied):
    assert applied.topology.cross_tenant(applied.connectivity) == []


def test_levels_meet_only_on_the_declared_cross_domain_ports(applied):
    assert applied.topology.domain_edges()
    assert applied.topology.cross_level_problems(applied.pods, applied.connectivity) == []


def test_dns_egress_as_declared(applied):
    assert applied.topology.dns_problems(applied.pods, applied.connectivity) == []


def test_can_connect_agrees_with_nca(applied):
    probes = applied.topology.declared_ports() | {("TCP", 5432), ("UDP", 9092), ("SCTP", 8080)}
    ours = evaluator_map(applied.policies, applied.ns_labels, applied.pods, probes)
    assert differences(ours, restricted(applied.connectivity, probes)) == []


def test_negative_control_allow_all_in_both_tenants_is_reported(applied, tmp_path):
    """Fed to nca only: the analysis can fail, and a leak shows up as cross-tenant connections."""
    first, second = (
        sorted(ns for ns, t in applied.topology.tenant_of.items() if t == tenant)[0]
        for tenant in sorted(set(applied.topology.tenant_of.values()))
    )
    opened = [*applied.policies, allow_all(first), allow_all(second)]
    connectivity = run_nca(opened, applied.ns_labels, applied.pods, tmp_path)
    leaks = applied.topology.cross_tenant(connectivity)
    assert any(a.startswith(f"{first}/") and b.startswith(f"{second}/") for a, b in leaks), leaks
    assert any(a.startswith(f"{second}/") and b.startswith(f"{first}/") for a, b in leaks), leaks
    assert differences(connectivity, applied.topology.expected(applied.pods))


def test_a_tenant_onboarded_later_is_walled_off_once_its_namespace_is_labelled(platform, applied, api_client, tmp_path):
    """A namespace that joins a domain before its TenantIsolation exists is a platform namespace (reachable
    from every tenant, by design); once the tenant claims it, the operator re-plans the domain and walls it off."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    (ingestion,) = {t["spec"]["securityDomain"] for t in _of_kind(platform, "TenantIsolation")}
    tenant_namespace = sorted(applied.topology.tenant_of)[0]
    namespace, tenant_id = f"initech-ops-{SUFFIX}", f"initech-{SUFFIX}"
    joined = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"iotsec.io/security-domain": ingestion}},
    }
    tenant = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TenantIsolation",
        "metadata": {"name": tenant_id},
        "spec": {"tenantID": tenant_id, "securityDomain": ingestion, "namespaces": [namespace]},
    }
    core.create_namespace(joined)
    try:

        def member() -> bool:
            status = (
                custom.get_cluster_custom_object(GROUP, VERSION, PLURALS["SecurityDomain"], ingestion).get("status")
                or {}
            )
            return namespace in status.get("memberNamespaces", [])

        eventually(member, timeout=30, what=f"{namespace} a member of {ingestion}")
        before = analyse(api_client, [*platform, joined], tmp_path / "before")
        pair = (f"{tenant_namespace}/app-low", f"{namespace}/app-low")
        assert pair in before.connectivity, "unclaimed, the namespace is the platform's: every tenant reaches it"
        custom.create_cluster_custom_object(GROUP, VERSION, PLURALS["TenantIsolation"], tenant)
        attempts = iter(range(1000))

        def walled_off() -> bool:
            after = analyse(api_client, [*platform, joined, tenant], tmp_path / f"after-{next(attempts)}")
            assert after.topology.cross_tenant(after.connectivity) == []
            assert differences(after.connectivity, after.topology.expected(after.pods)) == []
            return True

        eventually(walled_off, timeout=45, interval=1, what=f"tenant {tenant_id} walled off")
    finally:
        with contextlib.suppress(ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURALS["TenantIsolation"], tenant_id)
        eventually(lambda: _gone(custom, "TenantIsolation", tenant_id), timeout=30, what=f"tenant {tenant_id} deleted")
        core.delete_namespace(namespace)


def test_egress_to_a_cidr_is_reported_ready(platform, api_client):
    custom, networking = client.CustomObjectsApi(api_client), client.NetworkingV1Api(api_client)
    name = CIDR_EGRESS["metadata"]["name"]
    # the policies are applied before the status is written: once they are there, Ready is due at once
    eventually(lambda: networking.list_namespaced_network_policy(name).items, timeout=60, what=f"{name} policies")
    eventually(lambda: _ready(custom, "SecurityDomain", name), timeout=5, what=f"SecurityDomain {name} Ready")
