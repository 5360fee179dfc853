"""A domain is planned with the labels its tenants put on their namespaces, before they have put them (issue 15:
the live examples test saw the ingestion domain's tenant namespaces planned domain-wide, open to each other, for
3.5-4.7 s after every resource was Ready, until the tenants' reconciles had labelled them)."""

from __future__ import annotations

from typing import Any

from iotsec.controllers import securitydomain as controller
from iotsec.model.labels import DOMAIN_CLAIM_LABEL, TENANT_LABEL


def tenant(name: str, tenant_id: str, namespaces: list[str], domain: str = "ingestion") -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "TenantIsolation",
        "metadata": {"name": name},
        "spec": {"tenantID": tenant_id, "securityDomain": domain, "namespaces": namespaces},
    }


class Tenants:
    def __init__(self, *bodies: dict[str, Any]):
        self.bodies = list(bodies)

    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None):
        assert kind == "TenantIsolation"
        return self.bodies


def test_tenant_namespaces_carry_their_tenant_before_the_tenant_has_labelled_them():
    live = {"acme-meters": {}, "globex-telematics": {"team": "g"}, "shared": {}, "iotsec-system": {}}
    api = Tenants(
        tenant("acme", "acme", ["acme-meters", "iotsec-system"]),
        tenant("globex", "globex", ["globex-telematics"]),
        tenant("late", "late", ["acme-meters"]),  # acme came first (by name): not late's
        {"apiVersion": "iotsec.io/v1alpha1", "kind": "TenantIsolation", "metadata": {"name": "bad"}, "spec": {}},
    )
    labels = controller._with_tenant_labels(api, live)  # type: ignore[arg-type]
    assert labels["acme-meters"] == {TENANT_LABEL: "acme", DOMAIN_CLAIM_LABEL: "ingestion"}
    assert labels["globex-telematics"] == {"team": "g", TENANT_LABEL: "globex", DOMAIN_CLAIM_LABEL: "ingestion"}
    assert labels["shared"] == {}
    assert labels["iotsec-system"] == {}, "a platform namespace is never a tenant's"
    assert live["acme-meters"] == {}, "the namespaces as read are left as they were"


def test_a_namespace_another_tenant_holds_keeps_its_tenant():
    live = {"acme-meters": {TENANT_LABEL: "globex", DOMAIN_CLAIM_LABEL: "ingestion"}}
    labels = controller._with_tenant_labels(Tenants(tenant("acme", "acme", ["acme-meters"])), live)  # type: ignore[arg-type]
    assert labels["acme-meters"][TENANT_LABEL] == "globex"


def test_without_the_tenantisolation_crd_the_namespaces_are_planned_as_they_are():
    from iotsec.k8s.kube import ApiError

    class NotServed:
        def list(self, *args: Any, **kwargs: Any):
            raise ApiError("the API server does not serve TenantIsolation in iotsec.io/v1alpha1", 404)

    live = {"acme-meters": {"team": "a"}}
    assert controller._with_tenant_labels(NotServed(), live) == live  # type: ignore[arg-type]
