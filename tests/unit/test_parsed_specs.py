"""A resource's spec is validated once per content (issue 18): its CEL rules cost more than the rest of a resync."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from iotsec.controllers import reconciler
from tests.conftest import load_examples


@pytest.fixture
def counted(monkeypatch) -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = []
    real = reconciler.parse_resource

    def parse(body: dict[str, Any]) -> Any:
        parsed.append(body)
        return real(body)

    monkeypatch.setattr(reconciler, "parse_resource", parse)
    monkeypatch.setattr(reconciler, "_specs", {})
    return parsed


def _tenant() -> dict[str, Any]:
    doc = next(d for d in load_examples() if d["kind"] == "TenantIsolation")
    return copy.deepcopy(doc)


def test_a_status_write_does_not_make_the_next_reconcile_validate_again(counted):
    body = _tenant()
    first = reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    body["status"] = {"observedGeneration": 1, "createdNamespaces": ["a"], "conditions": []}
    body["metadata"]["resourceVersion"] = "2"
    again = reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    assert again is first
    assert len(counted) == 1
    assert "status" not in counted[0], "the status is iotsec's own output: not validated as input"


def test_a_changed_spec_is_validated_again_and_an_invalid_one_rejected(counted, monkeypatch):
    rejected: list[str] = []
    monkeypatch.setattr(reconciler, "reject", lambda api, kind, body, exc: rejected.append(str(exc)) or _stop())
    body = _tenant()
    reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    body["spec"]["namespaces"] = ["Not_A_Namespace"]
    with pytest.raises(kopf.PermanentError):
        reconciler.parsed_spec(None, "TenantIsolation", body, reconciler.Reconciliation())  # type: ignore[arg-type]
    assert len(counted) == 2
    assert rejected


def _stop() -> None:
    raise kopf.PermanentError("rejected")
