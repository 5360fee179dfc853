"""The background scan, pure (iotsec.admission.scan): the objects a cluster holds judged as admission would judge them
now, the webhook's exclusions, one answer per owner, waivers reported as such."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from iotsec.admission.scan import SCANNED_KINDS, scan, scan_manifests
from iotsec.model.platform import Platform

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
IMAGE = "registry.example.com/iot/app:1.4.2"


def domain(name: str, namespaces: list[str], enforcement: str = "enforce", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"zone": "core", "namespaces": namespaces, "enforcement": enforcement, **extra},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def container(**security: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "image": IMAGE,
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            **security,
        },
    }


def pod_spec(**security: Any) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container(**security)],
    }


def owned(metadata: dict[str, Any], owner: tuple[str, str, str] | None) -> dict[str, Any]:
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": owner[0], "kind": owner[1], "name": owner[2], "uid": f"uid-{owner[2]}", "controller": True}
        ]
    return metadata


def deployment(name: str, ns: str, **security: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(**security)}},
    }


def replica_set(name: str, ns: str, owner: str | None, **security: Any) -> dict[str, Any]:
    obj = deployment(name, ns, **security)
    obj["kind"] = "ReplicaSet"
    obj["metadata"] = owned(obj["metadata"], ("apps/v1", "Deployment", owner) if owner else None)
    return obj


def pod(name: str, ns: str, owner: tuple[str, str, str] | None, **security: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": owned({"name": name, "namespace": ns, "uid": f"uid-{name}"}, owner),
        "spec": pod_spec(**security),
    }


def cluster(*objects: dict[str, Any]) -> list[dict[str, Any]]:
    """Two domains (plant enforces over line-a, lab warns over lab) and the namespaces, then `objects`."""
    return [
        domain("plant", ["line-a"]),
        domain("lab", ["lab"], enforcement="warn"),
        *(namespace(n) for n in ("line-a", "lab", "loose", "iotsec-system", "kube-system")),
        *objects,
    ]


def by_title(result: Any) -> dict[str, Any]:
    return {o.ref.title: o for o in result.objects}


def test_a_violating_deployment_is_found_with_rule_control_severity_and_message():
    result = scan(cluster(deployment("mqtt", "line-a", privileged=True)), NOW)
    (found,) = result.objects
    assert (found.ref.kind, found.ref.namespace, found.ref.name, found.ref.uid) == (
        "Deployment",
        "line-a",
        "mqtt",
        "uid-mqtt",
    )
    assert (found.domain, found.mode, found.failing) == ("plant", "enforce", True)
    (finding,) = found.violations
    assert (finding.rule, finding.control, finding.severity) == ("no-privileged", "X1369-9.4.3-1", "critical")
    assert "privileged" in finding.message
    assert finding.message.startswith("[X1369-9.4.3-1 no-privileged]")


def test_a_clean_deployment_is_checked_without_findings():
    result = scan(cluster(deployment("mqtt", "line-a")), NOW)
    (found,) = result.objects
    assert found.violations == ()
    assert found.waivers == ()
    assert not found.failing


def test_warn_mode_domain_findings_do_not_fail():
    result = scan(cluster(deployment("probe", "lab", privileged=True)), NOW)
    (found,) = result.objects
    assert found.mode == "warn"
    assert [f.rule for f in found.violations] == ["no-privileged"]
    assert not found.failing


def test_owned_children_are_answered_by_their_owner():
    objects = cluster(
        deployment("mqtt", "line-a", privileged=True),
        replica_set("mqtt-5d8f9", "line-a", "mqtt", privileged=True),
        pod("mqtt-5d8f9-x2x4z", "line-a", ("apps/v1", "ReplicaSet", "mqtt-5d8f9"), privileged=True),
    )
    result = scan(objects, NOW)
    assert list(by_title(result)) == ["Deployment line-a/mqtt"]
    assert result.answered_by_owner == 2


def test_a_child_breaking_more_than_its_owner_is_reported_itself():
    """A Pod with a forged ownerReference (or changed after creation) must not hide behind a clean owner."""
    objects = cluster(
        deployment("mqtt", "line-a"),
        pod("sneaky", "line-a", ("apps/v1", "Deployment", "mqtt"), privileged=True),
    )
    titles = by_title(scan(objects, NOW))
    assert set(titles) == {"Deployment line-a/mqtt", "Pod line-a/sneaky"}
    assert [f.rule for f in titles["Pod line-a/sneaky"].violations] == ["no-privileged"]


def test_an_old_replica_set_scaled_to_zero_is_answered_by_its_fixed_deployment():
    old = replica_set("mqtt-old", "line-a", "mqtt", privileged=True)
    rolling = replica_set("mqtt-rolling", "line-a", "mqtt", privileged=True)
    old["spec"]["replicas"] = 0
    rolling["spec"]["replicas"] = 1
    titles = by_title(scan(cluster(deployment("mqtt", "line-a"), old, rolling), NOW))
    assert set(titles) == {"Deployment line-a/mqtt", "ReplicaSet line-a/mqtt-rolling"}


def test_a_child_whose_owner_is_gone_is_reported():
    result = scan(cluster(pod("orphan", "line-a", ("apps/v1", "ReplicaSet", "gone"), privileged=True)), NOW)
    assert list(by_title(result)) == ["Pod line-a/orphan"]


def test_the_webhooks_exclusions_and_namespaces_outside_domains_are_not_scanned():
    platform = Platform(namespace="iotsec-system")
    objects = [
        domain("plant", ["line-a", "kube-system", "iotsec-system", "extra"]),
        *(namespace(n) for n in ("line-a", "kube-system", "iotsec-system", "loose", "extra")),
        deployment("dns", "kube-system", privileged=True),
        deployment("operator", "iotsec-system", privileged=True),
        deployment("elsewhere", "loose", privileged=True),
        deployment("skipped", "extra", privileged=True),
        deployment("mqtt", "line-a", privileged=True),
    ]
    result = scan(objects, NOW, platform=platform, excluded_namespaces=("extra",))
    assert list(by_title(result)) == ["Deployment line-a/mqtt"]
    assert result.excluded == {"kube-system": 1, "iotsec-system": 1, "extra": 1}
    assert result.outside_domains == {"loose": 1}


def test_a_waived_finding_is_a_waiver_with_the_exceptions_name_justification_and_approver():
    exception = {
        "rule": "no-privileged",
        "target": {"namespace": "line-a", "kind": "Deployment", "name": "mqtt"},
        "justification": "the gateway driver needs raw device access until firmware 3.0",
        "approver": "ciso@example.com",
        "expires": (NOW + timedelta(days=30)).isoformat(),
        "ticket": "RISK-7",
    }
    objects = [domain("plant", ["line-a"], exceptions=[exception]), namespace("line-a")]
    objects.append(deployment("mqtt", "line-a", privileged=True))
    (found,) = scan(objects, NOW).objects
    assert found.violations == ()
    (waiver,) = found.waivers
    assert (waiver.rule, waiver.exception, waiver.approver, waiver.ticket) == (
        "no-privileged",
        "plant/exceptions[0]",
        "ciso@example.com",
        "RISK-7",
    )
    assert waiver.justification.startswith("the gateway driver")
    assert waiver.control == "X1369-9.4.3-1"
    expired = copy.deepcopy(objects)
    expired[0]["spec"]["exceptions"][0]["expires"] = (NOW - timedelta(days=1)).isoformat()
    (late,) = scan(expired, NOW).objects
    assert [f.rule for f in late.violations] == ["no-privileged"]
    assert late.waivers == ()


def test_services_configmaps_and_cluster_role_bindings_are_scanned():
    node_port = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "open", "namespace": "line-a"},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]},
    }
    key_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "keys", "namespace": "line-a"},
        "data": {"tls.key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"},
    }
    admin = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "everyone-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "developers", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    titles = by_title(scan(cluster(node_port, key_map, admin), NOW))
    assert [f.rule for f in titles["Service line-a/open"].violations] == ["exposure-zone"]
    assert [f.rule for f in titles["ConfigMap line-a/keys"].violations] == ["no-keys-in-configmap"]
    crb = titles["ClusterRoleBinding everyone-admin"]
    assert crb.namespace is None
    assert [f.rule for f in crb.violations] == ["trusted-admin-binding"]


def test_a_huge_configmap_is_judged_without_trouble():
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "blob", "namespace": "line-a"},
        "data": {"blob.txt": "x" * 10_000_000},
    }
    (found,) = scan(cluster(big), NOW).objects
    assert found.ref.name == "blob"
    assert found.violations == ()


def test_scanned_kinds_cover_workloads_and_the_checked_objects():
    kinds = {kind for _versions, kind in SCANNED_KINDS}
    assert {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Rollout"} <= kinds
    assert {"Service", "Ingress", "ConfigMap", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds
    assert {"RoleBinding", "ClusterRoleBinding"} <= kinds
    assert (("batch/v1", "batch/v1beta1"), "CronJob") in SCANNED_KINDS


def test_kubernetes_own_rbac_defaults_are_left_out_but_the_label_alone_hides_nothing():
    def binding(name: str, subject: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [subject],
        }

    aggregation = binding(
        "system:controller:clusterrole-aggregation-controller",
        {"kind": "ServiceAccount", "name": "clusterrole-aggregation-controller", "namespace": "kube-system"},
    )
    disguised = binding("system:totally-default", {"kind": "Group", "name": "developers"})
    result = scan(cluster(aggregation, disguised), NOW)
    assert list(by_title(result)) == ["ClusterRoleBinding system:totally-default"]
    assert result.not_checked == {"ClusterRoleBinding (Kubernetes' own RBAC defaults)": 1}


def test_manifests_as_written_are_scanned_as_stored_in_the_default_namespace():
    """Offline (iotsec report over files): no Namespace objects, no metadata.namespace, as `iotsec check -n`."""
    written = deployment("mqtt", "line-a", privileged=True)
    del written["metadata"]["namespace"]
    objects = [domain("plant", ["line-a"]), written]
    (found,) = scan_manifests(objects, NOW, namespace="line-a").objects
    assert (found.namespace, found.domain, found.failing) == ("line-a", "plant", True)
    assert scan([domain("plant", ["line-a"]), deployment("mqtt", "line-a")], NOW).outside_domains == {"line-a": 1}


def _waiving(rule: str, name: str) -> dict[str, Any]:
    return {
        "rule": rule,
        "target": {"namespace": "line-a", "kind": "Deployment", "name": name},
        "justification": "the vendor converter writes its licence cache to /opt until 4.2",
        "approver": "ciso@example.com",
        "expires": (NOW + timedelta(days=30)).isoformat(),
    }


def test_a_childs_violation_does_not_hide_behind_its_owners_waiver():
    """A Pod with a forged controller ownerReference to a waived Deployment breaks the waived rule itself, and no
    exception covers the Pod (the webhook would deny it now): it is a failure, not the owner's skip."""
    objects = [domain("plant", ["line-a"], exceptions=[_waiving("read-only-root-fs", "legacy")]), namespace("line-a")]
    objects.append(deployment("legacy", "line-a", readOnlyRootFilesystem=False))
    objects.append(pod("intruder", "line-a", ("apps/v1", "Deployment", "legacy"), readOnlyRootFilesystem=False))
    titles = by_title(scan(objects, NOW))
    assert set(titles) == {"Deployment line-a/legacy", "Pod line-a/intruder"}
    assert [f.rule for f in titles["Pod line-a/intruder"].violations] == ["read-only-root-fs"]
    assert titles["Pod line-a/intruder"].failing


def test_the_real_children_of_a_waived_deployment_are_still_answered_by_it():
    objects = [domain("plant", ["line-a"], exceptions=[_waiving("read-only-root-fs", "legacy")]), namespace("line-a")]
    objects += [
        deployment("legacy", "line-a", readOnlyRootFilesystem=False),
        replica_set("legacy-5d8f9", "line-a", "legacy", readOnlyRootFilesystem=False),
        pod("legacy-5d8f9-x2x4z", "line-a", ("apps/v1", "ReplicaSet", "legacy-5d8f9"), readOnlyRootFilesystem=False),
    ]
    result = scan(objects, NOW)
    assert list(by_title(result)) == ["Deployment line-a/legacy"]
    assert result.answered_by_owner == 2


def test_manifests_with_malformed_owner_references_are_judged_not_a_crash():
    """Offline (iotsec report PATH) objects are as written: ownerReferences that are not a list of mappings."""
    for refs in (-1, "owner", {"kind": "Deployment"}, [None, 3]):
        obj = pod("p", "line-a", None, privileged=True)
        obj["metadata"]["ownerReferences"] = refs
        assert [o.ref.title for o in scan(cluster(obj), NOW).objects] == ["Pod line-a/p"]
