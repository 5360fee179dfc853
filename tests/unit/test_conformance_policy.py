"""The report's configuration probes on small hand-built inventories: met, partial and not met for each."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from iotsec.build import render
from iotsec.conformance import policy
from iotsec.conformance.model import Inventory, Verdict
from iotsec.model.manifests import Document

NOW = datetime(2026, 12, 3, tzinfo=UTC)


@pytest.fixture(autouse=True)
def published_reports_as_read(monkeypatch):
    """These tests hand the probes PolicyReports with the results each case needs, over objects that do not break
    those rules: live, the report judges the objects again (a forged report hides nothing;
    tests/unit/test_report_scan_forgery.py), so here that judgement is off and the results are read as published."""
    from iotsec.conformance import inventory

    monkeypatch.setattr(inventory, "_judged_again", lambda made, published: published)


def domain(name: str = "core", zone: str = "core", namespaces: tuple[str, ...] = ("app",), **spec: Any) -> dict:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"zone": zone, "namespaces": list(namespaces), **spec},
    }


def namespace(name: str, labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def applied_cluster(*resources: dict, extra: list[dict] | None = None) -> list[dict]:
    """What a cluster holds after the operator reconciled `resources`: their objects, namespaces labelled."""
    docs = [Document("t", i, r) for i, r in enumerate(resources)]
    names = {ns for r in resources if r["kind"] == "SecurityDomain" for ns in r["spec"].get("namespaces", [])}
    docs += [Document("t", 100 + i, namespace(ns)) for i, ns in enumerate(sorted(names))]
    planned = render.render(docs).objects
    objects = [copy.deepcopy(o) for o in planned if o["kind"] != "Namespace"]
    labels: dict[str, dict[str, str]] = {}
    annotations: dict[str, dict[str, str]] = {}
    for patch in (o for o in planned if o["kind"] == "Namespace"):
        labels.setdefault(patch["metadata"]["name"], {}).update(patch["metadata"].get("labels") or {})
        annotations.setdefault(patch["metadata"]["name"], {}).update(patch["metadata"].get("annotations") or {})
    for ns in sorted(names | labels.keys()):
        objects.append(namespace(ns, labels.get(ns, {})))
        objects[-1]["metadata"]["annotations"] = annotations.get(ns, {})
    return [*resources, *objects, *(extra or [])]


def live(objects: list[dict], **unavailable: str) -> Inventory:
    return Inventory("cluster", NOW, objects, source="https://test", unavailable=dict(unavailable))


def offline(objects: list[dict]) -> Inventory:
    from iotsec.conformance.inventory import from_documents

    return from_documents([Document("t", i, o) for i, o in enumerate(objects)], NOW, "t.yaml")


def of(assessments, control: str, scope: str | None = None) -> list:
    return [a for a in assessments if a.control == control and (scope is None or a.scope.name == scope)]


def one(assessments, control: str, scope: str | None = None):
    found = of(list(assessments), control, scope)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- NetworkPolicies: desired state


def test_network_policies_present_and_equal_are_met():
    found = list(policy.desired_state(live(applied_cluster(domain()))))
    segment = one(found, "X1369-9.4.1-2", "app")
    assert segment.verdict is Verdict.MET
    assert segment.scope.kind == "namespace"
    assert segment.scope.domain == "core"
    assert any(o.name == "iotsec-core-default-deny" for e in segment.evidence for o in e.objects)
    assert one(found, "X1369-9.2.1-1", "app").verdict is Verdict.MET
    assert one(found, "X1369-9.4.1-3", "app").verdict is Verdict.MET
    assert one(found, "X1369-9.5.1-1", "app").verdict is Verdict.MET


def test_a_missing_default_deny_is_not_met_and_named():
    objects = [o for o in applied_cluster(domain()) if o["metadata"]["name"] != "iotsec-core-default-deny"]
    found = list(policy.desired_state(live(objects)))
    segment = one(found, "X1369-9.4.1-2", "app")
    assert segment.verdict is Verdict.NOT_MET
    assert "NetworkPolicy app/iotsec-core-default-deny (missing)" in segment.summary
    refs = [o for e in segment.evidence for o in e.objects if o.name == "iotsec-core-default-deny"]
    assert refs
    assert refs[0].namespace == "app"
    assert one(found, "X1369-9.2.1-1", "app").verdict is Verdict.NOT_MET
    assert one(found, "X1369-9.4.1-3", "app").verdict is Verdict.MET  # dns and rules are still in place


def test_a_drifted_policy_is_not_met():
    objects = applied_cluster(domain())
    dns = next(o for o in objects if o["metadata"]["name"] == "iotsec-core-dns")
    dns["spec"]["egress"] = [{}]  # everything
    mutual = one(policy.desired_state(live(objects)), "X1369-9.4.1-3", "app")
    assert mutual.verdict is Verdict.NOT_MET
    assert "iotsec-core-dns (drifted)" in mutual.summary


def test_a_left_over_policy_of_the_domain_is_not_met():
    objects = applied_cluster(domain())
    stale = copy.deepcopy(next(o for o in objects if o["metadata"]["name"] == "iotsec-core-dns"))
    stale["metadata"]["name"] = "iotsec-core-out-old"
    objects.append(stale)
    assert "(stale)" in one(policy.desired_state(live(objects)), "X1369-9.4.1-3", "app").summary


def test_unreadable_network_policies_are_partial():
    objects = [o for o in applied_cluster(domain()) if o["kind"] != "NetworkPolicy"]
    inventory = live(objects, **{"networking.k8s.io/NetworkPolicy": "forbidden"})
    assert one(policy.desired_state(inventory), "X1369-9.4.1-2", "app").verdict is Verdict.PARTIAL


def test_offline_the_plan_is_met_and_says_so():
    segment = one(policy.desired_state(offline([domain()])), "X1369-9.4.1-2", "app")
    assert segment.verdict is Verdict.MET
    assert segment.summary.startswith("planned (offline)")
    assert all(o.planned for e in segment.evidence for o in e.objects)


# ---------------------------------------------------------------- Pod Security labels


def test_pod_security_labels_in_place_are_met():
    found = list(policy.pod_security_labels(live(applied_cluster(domain()))))
    assert one(found, "X1369-9.3.1-4", "app").verdict is Verdict.MET
    assert one(found, "X1369-9.4.3-1", "app").verdict is Verdict.MET


def test_missing_pod_security_labels_are_not_met():
    objects = applied_cluster(domain())
    ns = next(o for o in objects if o["kind"] == "Namespace")
    del ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    found = one(policy.pod_security_labels(live(objects)), "X1369-9.4.3-1", "app")
    assert found.verdict is Verdict.NOT_MET
    assert "pod-security.kubernetes.io/enforce=restricted" in found.summary


def test_a_warn_mode_domain_is_partial():
    found = one(policy.pod_security_labels(live(applied_cluster(domain(enforcement="warn")))), "X1369-9.4.3-1")
    assert found.verdict is Verdict.PARTIAL
    assert "warn mode" in found.summary


# ---------------------------------------------------------------- zones and exposure


def service(name: str, ns: str, type_: str = "ClusterIP") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"type": type_}}


def test_exposure_outside_access_zones_is_not_met():
    objects = applied_cluster(domain(), extra=[service("lb", "app", "LoadBalancer"), service("in", "app")])
    boundary = one(policy.zones(live(objects)), "X1369-9.4.1-4", "core")
    assert boundary.verdict is Verdict.NOT_MET
    assert [o.name for e in boundary.evidence for o in e.objects] == ["lb"]


def test_exposure_in_an_access_zone_is_met():
    objects = applied_cluster(domain("edge", "access"), extra=[service("lb", "app", "LoadBalancer")])
    assert one(policy.zones(live(objects)), "X1369-9.4.1-4", "edge").verdict is Verdict.MET


def test_workloads_outside_every_domain_are_not_met():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "scratch"}, "spec": {}}
    found = list(policy.zones(live(applied_cluster(domain(), extra=[namespace("scratch"), pod]))))
    assert one(found, "X1369-9.4.1-1", "core").verdict is Verdict.MET
    loose = one(found, "X1369-9.4.1-1", "scratch")
    assert loose.verdict is Verdict.NOT_MET
    assert loose.evidence[0].objects[0].name == "p"


def test_a_domain_without_members_is_partial_and_no_domain_at_all_is_not_met():
    assert one(policy.zones(live([domain()])), "X1369-9.4.1-1", "core").verdict is Verdict.PARTIAL
    assert one(policy.zones(live([])), "X1369-9.4.1-1").verdict is Verdict.NOT_MET


def test_an_invalid_custom_resource_is_reported_not_a_crash():
    bad = domain(zone="moon")
    found = one(policy.zones(live([bad])), "X1369-9.4.1-1", "core")
    assert found.verdict is Verdict.NOT_MET
    assert "invalid" in found.summary


# ---------------------------------------------------------------- background scan, exceptions, webhook


def report(ns: str, *results: dict) -> dict:
    return {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": "iotsec-scan", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "iotsec"}},
        "results": list(results),
    }


def result(outcome: str, rule: str = "run-as-non-root", name: str = "web", **props: str) -> dict:
    control = "X1369-9.4.3-1" if rule != "all" else ""
    return {
        "policy": "iotsec",
        "rule": rule,
        "category": control,
        "result": outcome,
        "message": f"{rule} says so",
        "timestamp": {"seconds": 1796256000, "nanos": 0},
        "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "namespace": "app"}],
        "properties": {"control": control, **props} if control else dict(props),
    }


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [("fail", Verdict.NOT_MET), ("warn", Verdict.PARTIAL), ("skip", Verdict.PARTIAL)],
)
def test_scan_findings_give_the_verdict(outcome, verdict):
    found = one(
        policy.background_scan(live([*applied_cluster(domain()), report("app", result(outcome))])),
        "X1369-9.4.3-1",
        "app",
    )
    assert found.verdict is verdict
    assert found.evidence[0].objects[0].title == "Deployment app/web"


def test_a_waived_finding_names_its_exception():
    skipped = result(
        "skip", exception="legacy-root", justification="vendor image runs as root until Q3", approver="ciso"
    )
    found = one(
        policy.background_scan(live([*applied_cluster(domain()), report("app", skipped)])), "X1369-9.4.3-1", "app"
    )
    assert "legacy-root" in found.summary
    assert "approved by ciso" in found.evidence[0].text
    assert "vendor image" in found.evidence[0].text


def test_only_passes_are_met():
    found = list(policy.background_scan(live([*applied_cluster(domain()), report("app", result("pass", "all"))])))
    assert one(found, "X1369-9.4.3-1", "app").verdict is Verdict.MET
    assert one(found, "X1369-9.2.2-1", "app").verdict is Verdict.MET


def test_no_scan_results_is_partial_at_cluster_scope():
    found = list(policy.background_scan(live(applied_cluster(domain()))))
    scan = [a for a in of(found, "X1369-9.4.3-1") if a.mechanism == "background scan"]
    assert scan
    assert scan[0].verdict is Verdict.PARTIAL
    assert scan[0].scope.kind == "cluster"


def exception(expires: str) -> dict:
    return {
        "rule": "run-as-non-root",
        "target": {"namespace": "app", "kind": "Deployment", "name": "web"},
        "justification": "vendor image runs as root until the Q3 release",
        "approver": "ciso@example.com",
        "expires": expires,
    }


def test_exceptions_active_and_expired_are_evidence():
    sd = domain(exceptions=[exception("2027-01-01T00:00:00Z"), exception("2026-06-01T00:00:00Z")])
    found = [a for a in policy.background_scan(live(applied_cluster(sd))) if a.mechanism == "SecurityDomain exceptions"]
    active = [a for a in found if a.verdict is Verdict.PARTIAL]
    expired = [a for a in found if a.verdict is Verdict.NOT_APPLICABLE]
    assert len(active) == 1
    assert len(expired) == 1
    assert "active until 2027-01-01" in active[0].evidence[0].text
    assert "ciso@example.com" in expired[0].evidence[0].text
    assert "expired on 2026-06-01" in expired[0].evidence[0].text
    assert active[0].scope.name == "app"
    assert active[0].control == "X1369-9.4.3-1"


def webhook_config(failure: str) -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "iotsec"},
        "webhooks": [{"name": "workloads.iotsec.io", "failurePolicy": failure}],
    }


@pytest.mark.parametrize(
    ("configs", "verdict"),
    [([], Verdict.PARTIAL), ([webhook_config("Ignore")], Verdict.PARTIAL), ([webhook_config("Fail")], Verdict.MET)],
)
def test_the_webhook_registration(configs, verdict):
    found = [a for a in policy.background_scan(live(configs)) if a.mechanism == "ValidatingWebhookConfiguration"]
    assert {a.verdict for a in found if a.control not in policy.PART_ONLY} == {verdict}
    assert {a.control for a in found} == set(policy.ANSWERS[policy.background_scan])


def test_offline_there_is_no_webhook_verdict():
    found = policy.background_scan(offline([domain()]))
    assert not [a for a in found if a.mechanism == "ValidatingWebhookConfiguration"]


# ---------------------------------------------------------------- tenants


def tenant(storage: dict | None = None) -> dict:
    spec: dict[str, Any] = {"tenantID": "acme", "securityDomain": "core", "namespaces": ["app"]}
    if storage is not None:
        spec["storage"] = storage
    return {"apiVersion": "iotsec.io/v1alpha1", "kind": "TenantIsolation", "metadata": {"name": "acme"}, "spec": spec}


def storage_class(labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "enc", "labels": labels},
        "provisioner": "x",
    }


STORAGE = {"storageClassName": "enc", "dataClasses": ["internal", "confidential"]}


@pytest.mark.parametrize(
    ("storage", "classes", "verdict"),
    [
        (None, [], Verdict.PARTIAL),
        (STORAGE, [], Verdict.NOT_MET),
        (STORAGE, [storage_class({})], Verdict.NOT_MET),
        (STORAGE, [storage_class({"iotsec.io/encrypted": "true"})], Verdict.MET),
    ],
)
def test_tenant_storage(storage, classes, verdict):
    found = one(policy.tenants(live(applied_cluster(domain(), tenant(storage), extra=classes))), "X1369-9.2.4-1")
    assert found.verdict is verdict
    assert found.scope.kind == "tenant"
    assert found.scope.tenant == "acme"
    assert found.scope.domain == "core"


def test_a_binding_for_another_tenants_identity_is_not_met():
    other = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "TenantIsolation",
        "metadata": {"name": "globex"},
        "spec": {"tenantID": "globex", "securityDomain": "core", "namespaces": ["other"]},
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "peek", "namespace": "app"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "spy", "namespace": "other"}],
    }
    objects = applied_cluster(domain(namespaces=("app", "other")), tenant(), other)
    assert one(policy.tenants(live(objects)), "X1369-9.2.3-1", "acme").verdict is Verdict.MET
    found = one(policy.tenants(live([*objects, binding])), "X1369-9.2.3-1", "acme")
    assert found.verdict is Verdict.NOT_MET
    assert found.evidence[0].objects[0].name == "peek"


def test_tenant_rbac_and_quotas_come_from_the_desired_state():
    objects = applied_cluster(domain(), tenant())
    found = list(policy.desired_state(live(objects)))
    assert one(found, "X1369-9.1.3.2-1", "acme").verdict is Verdict.MET
    quota = next(o for o in objects if o["kind"] == "ResourceQuota")
    objects.remove(quota)
    missing = one(policy.desired_state(live(objects)), "X1369-9.1.3.2-1", "acme")
    assert missing.verdict is Verdict.NOT_MET
    assert quota["metadata"]["name"] in missing.summary


def test_the_answers_cover_every_control_the_builders_annotate():
    from pathlib import Path

    from iotsec.conformance.inventory import view
    from iotsec.model.manifests import load_documents

    root = Path(__file__).resolve().parents[2] / "examples" / "platform"
    inventory = offline([d.obj for d in load_documents([root])])
    annotated = {c for o in policy._judged(view(inventory).desired) for c in policy._controls_judged(o)}
    assert annotated <= set(policy.ANSWERS[policy.desired_state])


def test_a_control_the_same_mechanism_answers_gets_the_same_verdict_saying_so():
    tls = {**result("fail", "ingress-tls"), "category": "X1369-9.2.2-1", "properties": {"control": "X1369-9.2.2-1"}}
    found = list(policy.background_scan(live([*applied_cluster(domain()), report("app", tls)])))
    integrity = one(found, "X1369-9.2.2-2", "app")
    assert integrity.verdict is Verdict.NOT_MET
    assert integrity.summary.startswith("(as X1369-9.2.2-1)")
    assert "X1369-9.2.2-2" in policy.ANSWERS[policy.background_scan]


def test_an_alias_the_mechanism_meets_only_in_part_is_partial():
    found = list(policy.background_scan(live([*applied_cluster(domain()), report("app", result("pass", "all"))])))
    assert one(found, "X1369-9.5.3-1", "app").verdict is Verdict.MET
    limited = one(found, "X1369-9.1.3.3-1", "app")
    assert limited.verdict is Verdict.PARTIAL
    assert "anomaly rules" in limited.missing


def test_a_tenant_namespace_that_does_not_exist_is_not_met():
    objects = applied_cluster(
        domain(namespaces=("app", "data")), {**tenant(), "spec": {**tenant()["spec"], "namespaces": ["app", "data"]}}
    )
    assert one(policy.desired_state(live(objects)), "X1369-9.2.1-1", "acme").verdict is Verdict.MET
    objects = [o for o in objects if not (o["kind"] == "Namespace" and o["metadata"]["name"] == "data")]
    found = one(policy.desired_state(live(objects)), "X1369-9.2.1-1", "acme")
    assert found.verdict is Verdict.NOT_MET
    assert "Namespace data (missing)" in found.summary


def test_offline_a_policy_given_in_the_files_that_differs_from_the_plan_reads_drifted():
    planned = [o for o in applied_cluster(domain()) if o["metadata"]["name"] == "iotsec-core-default-deny"]
    widened = copy.deepcopy(planned[0])
    widened["spec"]["ingress"] = [{}]
    found = one(policy.desired_state(offline([domain(), namespace("app"), widened])), "X1369-9.4.1-2", "app")
    assert found.verdict is Verdict.NOT_MET
    assert "iotsec-core-default-deny (drifted)" in found.summary


def test_policies_left_in_a_namespace_being_deleted_are_not_stale():
    objects = applied_cluster(domain())
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    found = list(policy.desired_state(live([o for o in objects if o["kind"] != "SecurityDomain"])))
    assert not [a for a in found if a.verdict is Verdict.NOT_MET]


def test_unneeded_middleware_interfaces_read_as_allowed_ports_but_never_met():
    """9.3.3-2 is answered as 9.3.2-3 (only declared ports open), partial at best: interfaces served on a declared
    port are neither disabled nor detected."""
    clean = list(policy.background_scan(live([*applied_cluster(domain()), report("app", result("pass", "all"))])))
    assert one(clean, "X1369-9.3.2-3", "app").verdict is Verdict.MET
    middleware = one(clean, "X1369-9.3.3-2", "app")
    assert middleware.verdict is Verdict.PARTIAL
    assert "(as X1369-9.3.2-3)" in middleware.summary
    assert "admin consoles" in middleware.missing
    port = {**result("fail", "allowed-ports"), "category": "X1369-9.3.2-3", "properties": {"control": "X1369-9.3.2-3"}}
    failing = list(policy.background_scan(live([*applied_cluster(domain()), report("app", port)])))
    assert one(failing, "X1369-9.3.3-2", "app").verdict is Verdict.NOT_MET
    assert "X1369-9.3.3-2" in policy.ANSWERS[policy.desired_state]


def test_offline_manifests_are_scanned_as_written_even_without_their_namespace_objects():
    """As `iotsec check`: a Deployment in a namespace a domain names is judged though no Namespace document is
    given (the background scan of live objects would call it outside every domain)."""
    privileged = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "app"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
            },
        },
    }
    found = one(policy.background_scan(offline([domain(), privileged])), "X1369-9.4.3-1", "app")
    assert found.verdict is Verdict.NOT_MET
    assert "Deployment app/web" in found.summary
