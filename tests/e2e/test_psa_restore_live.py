"""The real operator (`iotsec run`) against a real API server: a namespace leaving a SecurityDomain, by a spec change
or by the domain's deletion, gets back the Pod Security labels it had before it joined (issue 15)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator

GROUP, VERSION, PLURAL = "iotsec.io", "v1alpha1", "securitydomains"
SUFFIX = uuid.uuid4().hex[:5]
PSA = "pod-security.kubernetes.io"
OWN = {f"{PSA}/enforce": "baseline", f"{PSA}/enforce-version": "v1.20"}
RECORD = "iotsec.io/psa-before"


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory) -> Iterator[Operator]:
    running = Operator(tmp_path_factory.mktemp("operator") / "operator.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def namespaces(core) -> Iterator[dict[str, str]]:
    """kept: stays a member until the domain goes; dropped: leaves by a spec change; bare: had no PSA labels."""
    names = {role: f"e2e-psa-{role}-{SUFFIX}" for role in ("kept", "dropped", "bare")}
    for role, name in names.items():
        labels = {"kubernetes.io/metadata.name": name, "team": "ops", **(OWN if role != "bare" else {})}
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
    yield names
    for name in names.values():
        core.delete_namespace(name)


@pytest.fixture(scope="module")
def domain(operator, custom, namespaces) -> Iterator[str]:
    name = f"psa-{SUFFIX}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecurityDomain",
        "metadata": {"name": name},
        "spec": {"zone": "core", "namespaces": sorted(namespaces.values())},
    }
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    yield name
    try:
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _metadata(core, name: str) -> tuple[dict[str, str], dict[str, str]]:
    meta = core.read_namespace(name).metadata
    return dict(meta.labels or {}), dict(meta.annotations or {})


def _psa(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith(f"{PSA}/")}


def _joined(core, name: str, domain: str) -> bool:
    labels, _ = _metadata(core, name)
    return labels.get("iotsec.io/domain") == domain and labels.get(f"{PSA}/enforce") == "restricted"


def _left(core, name: str) -> dict[str, str] | None:
    """The namespace's labels once the domain's are gone and its record with them, else None."""
    labels, annotations = _metadata(core, name)
    if "iotsec.io/domain" in labels or RECORD in annotations:
        return None
    return labels


def test_leaving_members_get_their_own_pod_security_labels_back(custom, core, domain, namespaces):
    for name in namespaces.values():
        eventually(lambda name=name: _joined(core, name, domain), what=f"{name} joined {domain}")
    for role, name in namespaces.items():
        _, annotations = _metadata(core, name)
        assert json.loads(annotations[RECORD]) == (OWN if role != "bare" else {}), role

    # a merge patch, not get-and-replace: the operator writes the domain's status and annotations meanwhile (409)
    spec = {"spec": {"namespaces": [namespaces["kept"], namespaces["bare"]]}}
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, domain, spec)
    dropped = eventually(lambda: _left(core, namespaces["dropped"]), what="the dropped namespace left")
    assert _psa(dropped) == OWN
    assert dropped["team"] == "ops"
    assert _joined(core, namespaces["kept"], domain), "the remaining member keeps the domain's labels"

    custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, domain)
    kept = eventually(lambda: _left(core, namespaces["kept"]), what="the last members left with the domain")
    assert _psa(kept) == OWN
    bare = eventually(lambda: _left(core, namespaces["bare"]), what="the namespace without PSA labels left")
    assert _psa(bare) == {}
    assert "iotsec.io/zone" not in bare
