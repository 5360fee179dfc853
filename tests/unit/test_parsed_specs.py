"""A resource's spec is validated once per content (issue 18): its CEL rules cost more than the rest of a resync."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from iotsec.controllers import reconciler
from tests.conftest import load_examples


@pytest.fixture
def judged(monkeypatch) -> list[dict[str, Any]]:
    """What validation judged (each content once; the memory starts empty)."""
    from iotsec.api import validation

    seen: list[dict[str, Any]] = []
    real = validation._judge
    monkeypatch.setattr(validation, "_judge", lambda obj: seen.append(obj) or real(obj))
    monkeypatch.setattr(validation, "_CHECKED", {})
    return seen


def _tenant() -> dict[str, Any]:
    doc = next(d for d in load_examples() if d["kind"] == "TenantIsolation")
    return copy.deepcopy(doc)


def test_a_status_write_does_not_make_the_next_reconcile_validate_again(judged):
    body = _tenant()
    first = reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    body["status"] = {"observedGeneration": 1, "createdNamespaces": ["a"], "conditions": []}
    body["metadata"]["resourceVersion"] = "2"
    again = reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    assert again is first
    assert len(judged) == 1
    assert "status" not in judged[0], "the status is iotsec's own output: not validated as input"


def test_a_changed_spec_is_validated_again_and_an_invalid_one_rejected(judged, monkeypatch):
    rejected: list[str] = []
    monkeypatch.setattr(reconciler, "reject", lambda api, kind, body, exc: rejected.append(str(exc)) or _stop())
    body = _tenant()
    reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    body["spec"]["namespaces"] = ["Not_A_Namespace"]
    with pytest.raises(kopf.PermanentError):
        reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    assert len(judged) == 2
    assert rejected


def _stop() -> None:
    raise kopf.PermanentError("rejected")


def test_the_same_content_is_judged_once_whoever_asks(judged):
    """The background scan and the grant check judge every custom resource on each pass."""
    from iotsec.api.validation import parse_resource, validate_resource

    body = _tenant()
    first = parse_resource(body)
    assert parse_resource(copy.deepcopy(body)) is first
    assert validate_resource(body) == []
    assert len(judged) == 1


def test_an_update_with_the_stored_version_but_a_new_spec_is_judged_anew(judged):
    """An UPDATE's AdmissionReview carries the stored object's uid and resourceVersion with the new spec: a cache
    keyed by them would wave the new spec through."""
    from iotsec.api.validation import InvalidResourceError, parse_resource, validate_resource

    stored = _tenant()
    stored["metadata"].update(uid="uid-1", resourceVersion="7")
    parse_resource(stored)
    update = copy.deepcopy(stored)
    update["spec"]["namespaces"] = ["Not_A_Namespace"]
    with pytest.raises(InvalidResourceError):
        parse_resource(update)
    problems = validate_resource(update)
    assert problems
    problems.clear()  # a caller's copy: the remembered answer is not changed by it
    assert validate_resource(update)
    assert len(judged) == 2


def test_the_scan_and_grant_check_judge_a_resource_once_whatever_its_status_and_version(judged):
    """Their parse reads kind, name, namespace and spec: a status write or kopf's annotation is no new content."""
    from iotsec.api.validation import InvalidResourceError, parse_spec

    body = _tenant()
    first = parse_spec(body)
    written = copy.deepcopy(body)
    written["metadata"].update(resourceVersion="9", annotations={"iotsec.io/last-handled-configuration": "{}"})
    written["status"] = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}
    again = parse_spec(written)
    assert again.spec == first.spec
    assert (again.kind, again.name, again.namespace) == (first.kind, first.name, first.namespace)
    assert len(judged) == 1
    changed = copy.deepcopy(written)
    changed["spec"]["namespaces"] = ["Not_A_Namespace"]
    with pytest.raises(InvalidResourceError):
        parse_spec(changed)
    assert len(judged) == 2
