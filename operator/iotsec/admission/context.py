"""What a verdict depends on besides the object: the namespace's SecurityDomain and cluster facts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from iotsec.admission.guard import Managed
from iotsec.build.securitydomain import (
    Domain,
    NamespaceInfo,
    NetworkSettings,
    PortRange,
    assign_namespaces,
    namespace_labels,
)
from iotsec.model.platform import Platform

if TYPE_CHECKING:
    from iotsec.api.securitydomain import PolicyException, SecurityDomainSpec, WorkloadKind

DEFAULT_TRUSTED_GROUPS = frozenset({"system:masters"})


@dataclass(frozen=True)
class DomainPolicy:
    """The admission-relevant part of the SecurityDomain a namespace belongs to (name None: no domain)."""

    name: str | None
    zone: str | None
    enforcement: str = "enforce"
    pod_security: str = "restricted"
    allowed_ports: tuple[PortRange, ...] | None = None
    allowed_registries: tuple[str, ...] | None = None
    security_levels: tuple[str, ...] | None = None
    exceptions: tuple[PolicyException, ...] = ()
    image_pinning: str = "version"  # digest, version or any (SecurityDomainSpec.image_pinning)
    workload_kinds: tuple[WorkloadKind, ...] = ()  # the domain's additions to the built-in pod-spec table

    @classmethod
    def of(cls, name: str, spec: SecurityDomainSpec) -> DomainPolicy:
        ports = None
        if spec.allowed_ports:
            ports = tuple(PortRange(p.protocol, p.port, p.end_port or p.port) for p in spec.allowed_ports)
        return cls(
            name=name,
            zone=spec.zone,
            enforcement=spec.enforcement,
            pod_security=spec.pod_security,
            allowed_ports=ports,
            allowed_registries=tuple(spec.allowed_registries) if spec.allowed_registries else None,
            security_levels=tuple(spec.security_levels) if spec.security_level_isolation else None,
            exceptions=tuple(spec.exceptions or ()),
            image_pinning=spec.effective_image_pinning,
            workload_kinds=tuple(spec.workload_kinds or ()),
        )

    @classmethod
    def unassigned(cls, enforcement: str = "enforce") -> DomainPolicy:
        """A namespace in no domain: the defaults of an enforcing restricted domain, plus a violation of its own."""
        return cls(name=None, zone=None, enforcement=enforcement)


@dataclass(frozen=True)
class TenantStorage:
    """Which data classes a tenant's volumes may carry, and what an unlabelled claim counts as (X1369-9.2.4-1)."""

    tenant: str
    data_classes: tuple[str, ...]
    default_data_class: str | None


@dataclass(frozen=True)
class Context:
    domain: DomainPolicy
    now: datetime
    trusted_groups: frozenset[str] = DEFAULT_TRUSTED_GROUPS
    encrypted_storage_classes: frozenset[str] = frozenset()
    default_storage_class: str | None = None
    escalating_cluster_roles: frozenset[str] = frozenset({"cluster-admin"})
    tenant: TenantStorage | None = None
    own_grants: frozenset[tuple[str, str, str]] = frozenset()  # Platform.own_grants
    # the whole cluster view, for checks that look beyond the namespace (NetworkPolicies, ConfigMaps consumed)
    snapshot: Snapshot | None = field(default=None, compare=False, repr=False)
    user: str = ""  # who asks (the webhook's request.userInfo.username; "" in iotsec check)


@dataclass(frozen=True, slots=True)
class ConfigMapSummary:
    """What admission of a pod needs of a ConfigMap it takes its environment from: the keys holding a literal
    secret. Key names only, never values (the webhook keeps one per ConfigMap of the cluster)."""

    secret_keys: tuple[str, ...] = ()


@dataclass
class Snapshot:
    """The cluster as the policy sees it: resolves a namespace to its domain the way the operator does."""

    domains: Sequence[Domain] = ()
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    trusted_groups: frozenset[str] = DEFAULT_TRUSTED_GROUPS
    encrypted_storage_classes: frozenset[str] = frozenset()
    default_storage_class: str | None = None
    escalating_cluster_roles: frozenset[str] = frozenset({"cluster-admin"})
    tenants: Mapping[str, TenantStorage] = field(default_factory=dict)  # namespace -> its tenant's data classes
    unassigned_enforcement: str = "enforce"
    assume_named_namespaces_exist: bool = False
    tenant_claims: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)  # ns -> (tenant, domain, name)
    backup_namespaces: frozenset[str] = frozenset()
    platform: Platform = field(default_factory=Platform)
    # (namespace, name) -> summary; "" for a ConfigMap of a file without metadata.namespace (iotsec check)
    config_maps: Mapping[tuple[str, str], ConfigMapSummary] = field(default_factory=dict)
    # domains being deleted: they still judge their namespaces' workloads until they are gone, but prescribe no
    # labels, so the operator's deletion handler may take theirs off (else the fence refused it and the
    # domain's finalizer never came off)
    leaving_domains: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        infos = {name: NamespaceInfo(name, dict(labels)) for name, labels in self.namespaces.items()}
        if self.assume_named_namespaces_exist:
            for domain in self.domains:
                for name in domain.spec.namespaces or ():
                    infos.setdefault(name, NamespaceInfo(name))
        owners, _ = assign_namespaces(self.domains, infos, NetworkSettings())
        by_name = {d.name: d for d in self.domains}
        self._policies = {ns: DomainPolicy.of(owner, by_name[owner].spec) for ns, owner in owners.items()}
        self._contexts: dict[str | None, dict[str, object]] = {}  # namespace -> a Context's fields (see context)
        self._infos = infos
        self.managed = Managed(
            {ns: claim[0] for ns, claim in self.tenant_claims.items()},
            frozenset(self._policies),
            self.backup_namespaces,
            dict(self.tenant_claims),
            self._domain_labels,
        )

    def _domain_labels(self, namespace: str, labels: Mapping[str, str]) -> Mapping[str, str] | None:
        """The labels the domain that would hold `namespace`, were it labelled so, prescribes (the fence's check)."""
        infos = {**self._infos, namespace: NamespaceInfo(namespace, dict(labels))}
        staying = [d for d in self.domains if d.name not in self.leaving_domains]
        owners, _ = assign_namespaces(staying, infos, NetworkSettings())
        owner = next((d for d in staying if d.name == owners.get(namespace)), None)
        return namespace_labels(owner) if owner is not None else None

    def domain_of(self, namespace: str | None) -> DomainPolicy:
        if namespace is None:
            return DomainPolicy(name=None, zone=None)  # cluster-scoped objects: enforce, no zone
        if namespace == self.platform.audit_namespace:  # iotsec's own sinks: restricted and enforced, no domain's say
            return DomainPolicy(name=namespace, zone=None)
        return self._policies.get(namespace) or DomainPolicy.unassigned(self.unassigned_enforcement)

    def context(self, namespace: str | None, now: datetime, user: str = "") -> Context:
        fields = self._contexts.get(namespace)
        if fields is None:
            fields = vars(self._context(namespace, now, user))
            if namespace is None or namespace in self.namespaces or namespace in self._policies:  # not a stray name
                self._contexts[namespace] = fields
        # A copy of the namespace's fields with this request's `now` and user: the same Context as the
        # constructor makes, without its frozen field-by-field __init__ on every admission request
        ctx = object.__new__(Context)
        vars(ctx).update(fields, now=now, user=user)
        return ctx

    def _context(self, namespace: str | None, now: datetime, user: str) -> Context:
        return Context(
            domain=self.domain_of(namespace),
            now=now,
            trusted_groups=self.trusted_groups,
            encrypted_storage_classes=self.encrypted_storage_classes,
            default_storage_class=self.default_storage_class,
            escalating_cluster_roles=self.escalating_cluster_roles,
            tenant=self.tenants.get(namespace) if namespace else None,
            own_grants=self.platform.own_grants,
            snapshot=self,
            user=user,
        )


def trusted_groups_from(audit_specs: Iterable[object]) -> frozenset[str]:
    """The union of every AuditPolicy's trustedAdminGroups (system:masters when there is none)."""
    groups = {g for spec in audit_specs for g in getattr(spec, "trusted_admin_groups", ())}
    return frozenset(groups) or DEFAULT_TRUSTED_GROUPS
