"""A namespace leaving a SecurityDomain gets back the Pod Security labels it had before it joined (issue 15: one that
had enforce=baseline ended with no Pod Security label at all when its domain was deleted)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from iotsec.admission.guard import confine_operator
from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.api.securitydomain import SecurityDomainSpec
from iotsec.build.securitydomain import (
    Domain,
    NamespaceInfo,
    joining_record,
    leaving_labels,
    plan_domain,
    recorded_psa_labels,
)
from iotsec.k8s.kube import MetadataPatch
from iotsec.model.labels import DOMAIN_LABEL, PSA_BEFORE, ZONE_LABEL
from iotsec.model.platform import Platform

PSA = "pod-security.kubernetes.io"
OWN = {f"{PSA}/enforce": "baseline", f"{PSA}/enforce-version": "v1.20", f"{PSA}/warn": "restricted"}
DOMAIN_BODY = {
    "apiVersion": "iotsec.io/v1alpha1",
    "kind": "SecurityDomain",
    "metadata": {"name": "legacy-zone", "uid": "u-1", "generation": 1},
    "spec": {"zone": "core", "namespaces": ["legacy"]},
}
DOMAIN = Domain("legacy-zone", SecurityDomainSpec.model_validate(DOMAIN_BODY["spec"]), "2026-01-01T00:00:00Z")


class Namespaces:
    """The namespaces of a cluster as the SecurityDomain controller's Kube calls see them (merge patches)."""

    def __init__(self, **labels: dict[str, str]) -> None:
        self.meta = {name: {"name": name, "labels": dict(given), "annotations": {}} for name, given in labels.items()}

    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None):
        if kind != "Namespace":
            return []
        key, _, value = (label_selector or "=").partition("=")
        found = [m for m in self.meta.values() if not key or m["labels"].get(key) == value]
        return [{"metadata": copy.deepcopy(m)} for m in found]

    def _patch(self, field: str, name: str, values: dict[str, str | None]) -> bool:
        current = self.meta[name][field]
        before = dict(current)
        for key, value in values.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        return current != before

    def patch_labels(self, api_version: str, kind: str, name: str, labels: dict[str, str | None], namespace=None):
        return self._patch("labels", name, labels)

    def annotate(self, api_version: str, kind: str, name: str, annotations: dict[str, str | None], namespace=None):
        return self._patch("annotations", name, annotations)

    def patch_metadata(self, api_version: str, kind: str, name: str, namespace=None, labels=None, annotations=None):
        fields = {
            f for f, values in (("labels", labels), ("annotations", annotations)) if self._patch(f, name, values or {})
        }
        return MetadataPatch({"metadata": copy.deepcopy(self.meta[name])} if fields else None, fields, bool(fields))

    def apply(self, obj: dict[str, Any], owner: Any = None) -> dict[str, Any]:
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}

    def prune(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return []

    def infos(self) -> list[NamespaceInfo]:
        return [NamespaceInfo(m["name"], dict(m["labels"]), dict(m["annotations"])) for m in self.meta.values()]


def _reconcile(cluster: Namespaces) -> None:
    from iotsec.controllers.securitydomain import _apply

    _apply(cluster, DOMAIN_BODY, plan_domain(DOMAIN, [DOMAIN], cluster.infos()))  # type: ignore[arg-type]


def test_joining_records_only_the_namespaces_own_pod_security_labels() -> None:
    record = joining_record(NamespaceInfo("legacy", {**OWN, "team": "ops"}))
    assert record is not None
    assert json.loads(record[PSA_BEFORE]) == OWN
    assert json.loads(joining_record(NamespaceInfo("plain", {"team": "ops"}))[PSA_BEFORE]) == {}  # type: ignore[index]
    member = NamespaceInfo("legacy", {DOMAIN_LABEL: "other", f"{PSA}/enforce": "restricted"})
    assert joining_record(member) is None, "a member's Pod Security labels are iotsec's, never 'before'"


def test_leaving_takes_the_domain_labels_off_and_puts_the_recorded_ones_back() -> None:
    patch = leaving_labels({PSA_BEFORE: json.dumps(OWN)})
    assert {k: v for k, v in patch.items() if v is not None} == OWN
    assert patch[DOMAIN_LABEL] is None
    assert patch[ZONE_LABEL] is None
    assert patch[f"{PSA}/audit"] is None
    assert {k for k, v in leaving_labels({}).items() if v is not None} == set(), "nothing recorded: nothing restored"


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1, 2]", json.dumps({"team": "x", f"{PSA}/enforce": 3, f"{PSA}/bogus": "privileged"})],
)
def test_an_unreadable_or_foreign_record_restores_nothing(raw: str) -> None:
    assert recorded_psa_labels({PSA_BEFORE: raw}) == {}


def test_a_namespace_gets_its_own_pod_security_back_when_the_domain_goes() -> None:
    pytest.importorskip("kopf")
    from iotsec.controllers.securitydomain import _unlabel

    cluster = Namespaces(legacy={**OWN, "team": "ops"}, other={})
    _reconcile(cluster)
    joined = cluster.meta["legacy"]
    assert joined["labels"][f"{PSA}/enforce"] == "restricted"
    assert joined["labels"][DOMAIN_LABEL] == "legacy-zone"
    assert json.loads(joined["annotations"][PSA_BEFORE]) == OWN
    _reconcile(cluster)  # a resync of a member: iotsec's labels are not recorded as what it had before
    assert json.loads(cluster.meta["legacy"]["annotations"][PSA_BEFORE]) == OWN
    assert _unlabel(cluster, "legacy-zone", keep=set()) == ["legacy"]  # type: ignore[arg-type]
    assert cluster.meta["legacy"]["labels"] == {**OWN, "team": "ops"}
    assert cluster.meta["legacy"]["annotations"] == {}
    assert cluster.meta["other"]["labels"] == {}, "a namespace that never joined is not touched"


def test_a_namespace_without_pod_security_labels_leaves_with_none() -> None:
    pytest.importorskip("kopf")
    from iotsec.controllers.securitydomain import _unlabel

    cluster = Namespaces(legacy={"team": "ops"})
    _reconcile(cluster)
    _unlabel(cluster, "legacy-zone", keep=set())  # type: ignore[arg-type]
    assert cluster.meta["legacy"]["labels"] == {"team": "ops"}


# ---------------------------------------------------------------- the operator's fence lets exactly that through

PLATFORM = Platform("iotsec-system", "iotsec", "iotsec-operator")
SNAPSHOT = snapshot_from_objects([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy"}}])


def _namespace(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "legacy", "labels": labels, "annotations": annotations},
    }


def _fence(obj: dict[str, Any], old: dict[str, Any]) -> list[str]:
    found = confine_operator(PLATFORM.operator_user, "Namespace", "UPDATE", None, obj, old, PLATFORM, SNAPSHOT.managed)
    return [f.message for f in found]


def test_the_fence_lets_the_operator_restore_exactly_what_was_recorded() -> None:
    member_labels = {DOMAIN_LABEL: "legacy-zone", ZONE_LABEL: "core", f"{PSA}/enforce": "restricted"}
    member = _namespace(member_labels, {PSA_BEFORE: json.dumps(OWN)})
    assert _fence(_namespace(OWN, {PSA_BEFORE: json.dumps(OWN)}), member) == []
    forged = _namespace({f"{PSA}/enforce": "privileged"}, {PSA_BEFORE: json.dumps(OWN)})
    assert _fence(forged, member), "only the recorded value comes back"
    unrecorded = _namespace(member_labels, {})
    assert _fence(_namespace(OWN, {}), unrecorded), "nothing recorded: nothing to restore"
    plain = _namespace({}, {PSA_BEFORE: json.dumps(OWN)})
    assert _fence(_namespace(OWN, {PSA_BEFORE: json.dumps(OWN)}), plain), "only a namespace leaving its domain"
