"""Exceptions reach the excepted object and what its controllers create from it, by kind with its API group; a
client-written ownerReference from a person borrows nothing (red-team findings F1-F3 of issue 16)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from iotsec.admission.context import Context, DomainPolicy
from iotsec.admission.engine import decide
from iotsec.api.securitydomain import SecurityDomainSpec

NOW = datetime(2026, 12, 3, tzinfo=UTC)
NAMESPACE = "sensors"
PERSON = "alice@acme.example"
CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
HOST_PATH_POD = {
    "automountServiceAccountToken": False,
    "volumes": [{"name": "node", "hostPath": {"path": "/var/lib/mqtt"}}],
    "containers": [{"name": "broker", "image": "registry.example.com/mqtt:2.0.18"}],
}


def _ctx(kind: str, name: str, user: str = CONTROLLER, api_group: str | None = None) -> Context:
    target: dict[str, Any] = {"namespace": NAMESPACE, "kind": kind, "name": name}
    if api_group is not None:
        target["apiGroup"] = api_group
    exception = {
        "rule": "no-host-path",
        "target": target,
        "justification": "the broker's persistence sits on the gateway's disk until the CSI driver lands",
        "approver": "ciso@example.com",
        "expires": (NOW + timedelta(days=30)).isoformat(),
    }
    spec = SecurityDomainSpec.model_validate(
        {"zone": "core", "namespaces": [NAMESPACE], "podSecurity": "baseline", "exceptions": [exception]}
    )
    return Context(DomainPolicy.of("field", spec), NOW, user=user)


def _obj(api_version: str, kind: str, name: str, owner: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """A pod-carrying object of the table with the host-path pod at its path (or a plain object)."""
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": owner[0], "kind": owner[1], "name": owner[2], "uid": "u", "controller": True}
        ]
    template = {"metadata": {"labels": {"app": "mqtt"}}, "spec": HOST_PATH_POD}
    specs = {
        "Pod": HOST_PATH_POD,
        "Job": {"template": template},
        "CronJob": {"jobTemplate": {"spec": {"template": template}}},
        "Revision": HOST_PATH_POD,
        "Workflow": {"templates": []},
    }
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata,
        "spec": specs.get(kind, {"template": template}),
    }


def _waived(obj: dict[str, Any], ctx: Context) -> bool:
    decision = decide(obj, ctx)
    rules = {v.rule for v in decision.violations}
    assert "no-host-path" in rules or [u.rule for u in decision.exceptions_used] == ["no-host-path"], rules
    return "no-host-path" not in rules


CHAINS = [
    pytest.param(
        ("Deployment", "mqtt"),
        [
            _obj("apps/v1", "ReplicaSet", "mqtt-5d8f9", ("apps/v1", "Deployment", "mqtt")),
            _obj("v1", "Pod", "mqtt-5d8f9-x2x4z", ("apps/v1", "ReplicaSet", "mqtt-5d8f9")),
        ],
        id="deployment",
    ),
    pytest.param(
        ("CronJob", "nightly"),
        [
            _obj("batch/v1", "Job", "nightly-28871040", ("batch/v1", "CronJob", "nightly")),
            _obj("v1", "Pod", "nightly-28871040-q8x2m", ("batch/v1", "Job", "nightly-28871040")),
        ],
        id="cronjob",
    ),
    pytest.param(
        ("StatefulSet", "db"), [_obj("v1", "Pod", "db-0", ("apps/v1", "StatefulSet", "db"))], id="statefulset"
    ),
    pytest.param(
        ("Rollout", "edge"),
        [_obj("apps/v1", "ReplicaSet", "edge-6c7d8", ("argoproj.io/v1alpha1", "Rollout", "edge"))],
        id="rollout",
    ),
    pytest.param(
        ("ScaledJob", "ingest"),
        [_obj("batch/v1", "Job", "ingest-abcde", ("keda.sh/v1alpha1", "ScaledJob", "ingest"))],
        id="scaledjob",
    ),
    pytest.param(
        ("Service", "api"),
        [
            _obj("serving.knative.dev/v1", "Revision", "api-00001", ("serving.knative.dev/v1", "Configuration", "api")),
            _obj("apps/v1", "Deployment", "api-00001-deployment", ("serving.knative.dev/v1", "Revision", "api-00001")),
            _obj(
                "apps/v1",
                "ReplicaSet",
                "api-00001-deployment-7f9c",
                ("apps/v1", "Deployment", "api-00001-deployment"),
            ),
        ],
        id="knative-service",
    ),
]


@pytest.mark.parametrize(("target", "children"), CHAINS)
def test_an_exception_follows_the_objects_controllers_create(target, children):
    kind, name = target
    group = "serving.knative.dev" if kind == "Service" else None  # a bare Service means the core kind
    ctx = _ctx(kind, name, api_group=group)
    for child in children:
        assert _waived(child, ctx), child["metadata"]


def test_a_person_claiming_a_controller_parent_borrows_no_waiver():
    ctx_person = _ctx("Deployment", "mqtt", user=PERSON)
    forged = _obj("v1", "Pod", "mqtt-5d8f9-debug", ("apps/v1", "ReplicaSet", "mqtt-5d8f9"))
    assert not _waived(forged, ctx_person), "ownerReferences are written by the client"
    assert _waived(forged, _ctx("Deployment", "mqtt")), "the same pod from the ReplicaSet controller"


@pytest.mark.parametrize(
    "obj",
    [
        _obj("v1", "Pod", "mqtt-debug", ("apps/v1", "ReplicaSet", "whatever")),  # the owner is not the target's
        _obj("batch/v1", "Job", "mqtt-x", ("apps/v1", "ReplicaSet", "mqtt-x")),  # a ReplicaSet creates no Jobs
        _obj("v1", "Pod", "mqtt-shell-0", ("apps/v1", "StatefulSet", "mqtt-shell")),  # not the Deployment's line
        _obj("v1", "Pod", "mqtt-5d8f9-x2x4z"),  # no owner at all: a name is no claim
    ],
    ids=["foreign-owner", "impossible-child", "other-lineage", "no-owner"],
)
def test_a_name_prefix_or_an_unrelated_owner_is_no_lineage(obj):
    assert not _waived(obj, _ctx("Deployment", "mqtt"))


def test_a_kind_without_its_group_means_the_kubernetes_kind():
    knative = _obj("serving.knative.dev/v1", "Service", "api")
    knative["spec"] = {"template": {"spec": HOST_PATH_POD}}
    assert not _waived(knative, _ctx("Service", "api")), "Service means the core Service"
    assert _waived(knative, _ctx("Service", "api", api_group="serving.knative.dev"))
    kruise = _obj("apps.kruise.io/v1beta1", "StatefulSet", "db")
    assert not _waived(kruise, _ctx("StatefulSet", "db")), "StatefulSet means apps, not OpenKruise"
    assert _waived(kruise, _ctx("StatefulSet", "db", api_group="apps.kruise.io"))
    assert _waived(_obj("apps/v1", "StatefulSet", "db"), _ctx("StatefulSet", "db"))
