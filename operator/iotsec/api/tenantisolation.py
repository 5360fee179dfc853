"""TenantIsolation: one tenant's isolated environment (X.1369 §9.1.1-§9.1.4, §9.2.1, §9.2.3, §9.2.4).

A tenant gets its namespaces (joined to a SecurityDomain and walled off from other tenants), bounded
resources, privileges by user, application and device class, a unique identity and key per application,
a device CA, and storage that keeps confidential data encrypted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from iotsec.api.common import (
    SET_LIST,
    Duration,
    GroupName,
    Model,
    Name,
    Quantity,
    ResourceName,
    ShortText,
    Status,
    Text,
    cel,
    map_list,
    schema_extra,
)
from iotsec.api.durations import parse_duration
from iotsec.api.terms import ESCALATING_VERBS

DataClass = Literal["public", "internal", "confidential", "secret"]
ENCRYPTION_REQUIRED: tuple[DataClass, ...] = ("confidential", "secret")
Privilege = Literal["admin", "operator", "viewer", "custom"]
AppKeyAlgorithm = Literal["hmac-sha256", "ed25519"]
DeviceKeyAlgorithm = Literal["ecdsa-p256", "ed25519", "rsa-3072", "rsa-4096"]
CAKeyAlgorithm = Literal["ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096"]
KeyUsage = Literal["digitalSignature", "keyEncipherment", "keyAgreement", "dataEncipherment"]
ExtKeyUsage = Literal["clientAuth", "serverAuth"]
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "default")
"""Never a tenant's (desired.platform.RESERVED_NAMESPACES adds the release namespace, which the schema cannot know)."""
VerbName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^([a-z]+|\*)$")]
ApiGroup = Annotated[str, Field(max_length=253)]
ResourceType = Annotated[str, Field(min_length=1, max_length=253)]


class PolicyRule(Model):
    """An RBAC rule; escalating verbs are refused for tenants (X1369-9.6.3-1)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                f"!self.verbs.exists(v, v in {list(ESCALATING_VERBS)!r})",
                "tenant rules may not grant escalate, bind, impersonate or * (X1369-9.6.3-1)",
                ".verbs",
            ),
            cel(
                "!self.resources.exists(r, r == '*')",
                "tenant rules name resources explicitly, never * (X1369-9.1.1.2-5)",
                ".resources",
            ),
            cel(
                "!(self.resources.exists(r, r == 'networkpolicies' || r.startsWith('networkpolicies/')) && "
                f"self.verbs.exists(v, v in [{', '.join(repr(v) for v in WRITE_VERBS)}]))",
                "tenant rules may read networkpolicies but never write them: an allow-all policy would void the "
                "domain's default deny (X1369-9.2.1-1)",
                ".verbs",
            ),
        )
    )

    api_groups: list[ApiGroup] = Field(min_length=1, max_length=16, description='API groups; "" is the core group.')
    resources: list[ResourceType] = Field(min_length=1, max_length=32)
    verbs: list[VerbName] = Field(min_length=1, max_length=16)
    resource_names: list[ResourceName] | None = Field(default=None, max_length=64)


class UserClass(Model):
    """A class of human users and the privilege it carries in every tenant namespace (X1369-9.1.2-1)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "(self.privilege == 'custom') == (has(self.rules) && size(self.rules) > 0)",
                "rules are required for privilege custom and not allowed otherwise",
            ),
            cel(
                "(has(self.groups) && size(self.groups) > 0) || (has(self.users) && size(self.users) > 0)",
                "a user class binds at least one group or user (X1369-9.1.1.1-1)",
            ),
        )
    )

    name: Name
    privilege: Privilege = Field(description="admin, operator, viewer or custom (with rules).")
    groups: list[GroupName] | None = Field(default=None, max_length=32, json_schema_extra=SET_LIST)
    users: list[GroupName] | None = Field(
        default=None,
        max_length=64,
        description="Individual users; never shared accounts.",
        json_schema_extra=SET_LIST,
    )
    rules: list[PolicyRule] | None = Field(default=None, max_length=32)


class ApplicationClass(Model):
    """A class of applications and what its members may call (X1369-9.1.2-2, X1369-9.1.1.2-5)."""

    name: Name
    description: Text | None = None
    rules: list[PolicyRule] = Field(default_factory=list, max_length=32)


class Application(Model):
    """One application: its own ServiceAccount, app id and key (X1369-9.1.1.2-1, -4)."""

    name: Name = Field(description="Application name, unique in the tenant; part of the app id.")
    app_class: Name = Field(alias="class", description="Name of an applicationClasses entry.")
    namespace: Name = Field(description="One of the tenant's namespaces.")
    key_algorithm: AppKeyAlgorithm = Field(
        default="ed25519", description="ed25519 signing key pair or a 256-bit hmac-sha256 secret."
    )
    key_rotation: Duration = Field(default="90d", description="Rotate the key this often (X1369-9.1.1.2-4).")
    key_overlap: Duration = Field(default="7d", description="Keep the previous key valid this long after rotation.")


class DeviceClass(Model):
    """A class of devices and the certificate profile its members get (X1369-9.1.2-3, X1369-9.1.1.3-4)."""

    name: Name
    description: Text | None = None
    key_algorithm: DeviceKeyAlgorithm = Field(default="ecdsa-p256")
    validity: Duration = Field(default="365d", description="Lifetime of device certificates.")
    key_usage: list[KeyUsage] = Field(
        default=["digitalSignature"], min_length=1, max_length=4, json_schema_extra=SET_LIST
    )
    extended_key_usage: list[ExtKeyUsage] = Field(
        default=["clientAuth"], min_length=1, max_length=2, json_schema_extra=SET_LIST
    )


class DeviceCA(Model):
    """The tenant's device certificate authority (X1369-9.1.1.3-2, -3)."""

    key_algorithm: CAKeyAlgorithm = Field(default="ecdsa-p256")
    validity: Duration = Field(default="1825d", description="Lifetime of a CA certificate.")
    rotate_before: Duration = Field(
        default="180d", description="Issue the next CA this long before expiry; both stay trusted meanwhile."
    )
    organization: ShortText | None = Field(default=None, description="Subject O of the CA and device certs.")


class Quota(Model):
    """Total usage bounds per tenant namespace (X1369-9.1.3.2-1)."""

    cpu: Quantity = Field(default="8", description="Total CPU limits.")
    memory: Quantity = Field(default="16Gi", description="Total memory limits.")
    storage: Quantity = Field(default="100Gi", description="Total requested storage.")
    pods: Annotated[int, Field(ge=0, le=100000)] = 100
    persistent_volume_claims: Annotated[int, Field(ge=0, le=10000)] = 20
    services: Annotated[int, Field(ge=0, le=10000)] = 20
    load_balancers: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=0, description="Service type LoadBalancer; 0 unless the domain is exposed (X1369-9.4.1-4)."
    )
    node_ports: Annotated[int, Field(ge=0, le=1000)] = 0


class ContainerLimits(Model):
    """Per-container defaults and maxima written into a LimitRange (X1369-9.1.4-4)."""

    default_cpu: Quantity = "500m"
    default_memory: Quantity = "512Mi"
    default_request_cpu: Quantity = "100m"
    default_request_memory: Quantity = "128Mi"
    max_cpu: Quantity = "4"
    max_memory: Quantity = "8Gi"


class Storage(Model):
    """Where tenant data lives and how it is classified (X1369-9.2.4-1, -6)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "has(self.storageClassName) != has(self.provisioner)",
                "set storageClassName (a shared encrypted class) or provisioner (a class per tenant), not both",
            ),
            cel(
                "!has(self.defaultDataClass) || self.defaultDataClass in self.dataClasses",
                "defaultDataClass must be one of dataClasses",
                ".defaultDataClass",
            ),
            cel(
                "!has(self.parameters) || self.parameters.all(k, !k.startsWith('csi.storage.k8s.io/'))",
                "csi.storage.k8s.io/* parameters are iotsec's: it points every CSI secret reference at the tenant's "
                "volume key in the release namespace (X1369-9.2.4-2)",
                ".parameters",
            ),
        )
    )

    storage_class_name: ResourceName | None = Field(
        default=None, description="An existing StorageClass labelled iotsec.io/encrypted=true."
    )
    provisioner: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="CSI provisioner for a per-tenant encrypted StorageClass."
    )
    parameters: dict[str, Annotated[str, Field(max_length=1024)]] | None = Field(
        default=None,
        max_length=32,
        description="StorageClass parameters (e.g. the driver's encryption flags).",
    )
    reclaim_policy: Literal["Delete", "Retain"] = Field(
        default="Retain", description="What happens to a volume when its claim is deleted (X1369-9.2.4-6)."
    )
    data_classes: list[DataClass] = Field(
        default=["public", "internal", "confidential", "secret"],
        min_length=1,
        max_length=4,
        json_schema_extra=SET_LIST,
    )
    default_data_class: DataClass | None = Field(default="internal")


class TenantIsolationSpec(Model):
    """An isolated tenant of the IoT platform."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "!has(self.applications) || self.applications.all(a, "
                "has(self.applicationClasses) && self.applicationClasses.exists(c, c.name == a.class))",
                "every application's class must be declared in applicationClasses (X1369-9.1.2-2)",
                ".applications",
            ),
        )
    )

    tenant_id: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = Field(
        description="Stable tenant id; prefixes names and labels. Immutable.",
        json_schema_extra=schema_extra(cel("self == oldSelf", "tenantID is immutable")),
    )
    display_name: ShortText | None = None
    security_domain: Name = Field(description="The SecurityDomain the tenant's namespaces join.")
    namespaces: list[Name] = Field(
        min_length=1,
        max_length=64,
        description="Namespaces created or adopted; never a system namespace or the platform's own.",
        json_schema_extra=schema_extra(
            cel(
                f"!self.exists(n, n in [{', '.join(repr(n) for n in SYSTEM_NAMESPACES)}])",
                "system namespaces (kube-system, kube-public, kube-node-lease, default) are never a tenant's",
            ),
            list_type="set",
        ),
    )
    quota: Quota = Field(default=Quota.model_construct())
    limits: ContainerLimits = Field(default=ContainerLimits.model_construct())
    user_classes: list[UserClass] | None = Field(default=None, max_length=32, json_schema_extra=map_list("name"))
    application_classes: list[ApplicationClass] | None = Field(
        default=None, max_length=32, json_schema_extra=map_list("name")
    )
    applications: list[Application] | None = Field(default=None, max_length=256, json_schema_extra=map_list("name"))
    device_classes: list[DeviceClass] | None = Field(default=None, max_length=32, json_schema_extra=map_list("name"))
    device_ca: DeviceCA = Field(default=DeviceCA.model_construct())
    storage: Storage | None = None
    deletion_policy: Literal["Retain", "Shred"] = Field(
        default="Retain",
        description="Retain keeps namespaces, data and keys on delete; Shred destroys key material on purpose.",
    )

    def cross_reference_problems(self) -> Iterator[tuple[str, str]]:
        """References between fields that CEL cannot check cheaply (relative paths)."""
        for index, app in enumerate(self.applications or ()):
            if app.namespace not in self.namespaces:
                yield (
                    f"applications[{index}].namespace",
                    f"{app.namespace!r} is not one of the tenant's namespaces ({', '.join(self.namespaces)})",
                )
            if parse_duration(app.key_overlap) >= parse_duration(app.key_rotation):
                yield (
                    f"applications[{index}].keyOverlap",
                    f"overlap {app.key_overlap} must be shorter than the rotation period {app.key_rotation}",
                )
        if parse_duration(self.device_ca.rotate_before) >= parse_duration(self.device_ca.validity):
            yield (
                "deviceCA.rotateBefore",
                f"{self.device_ca.rotate_before} must be shorter than the CA validity {self.device_ca.validity}",
            )


ObjectRef = Annotated[str, Field(max_length=317)]  # <namespace>/<name>; no pattern: older values were bare names


class ApplicationStatus(Model):
    model_config = ConfigDict(frozen=False)

    name: Name
    app_id: Annotated[str, Field(max_length=128)]
    service_account: Name | None = None
    key_secret: ResourceName | None = None
    key_created: datetime | None = None
    next_rotation: datetime | None = None


class TenantIsolationStatus(Status):
    namespaces: list[Name] = Field(default_factory=list, max_length=64)
    applications: list[ApplicationStatus] = Field(
        default_factory=list, max_length=256, json_schema_extra=map_list("name")
    )
    device_ca_secret: ObjectRef | None = Field(
        default=None, description="<namespace>/<name> of the device CA, recorded once and then kept."
    )
    device_ca_not_after: datetime | None = None
    volume_key_secret: ObjectRef | None = Field(
        default=None, description="<namespace>/<name> of the volume key, recorded once and then kept."
    )
    device_registry: ObjectRef | None = Field(
        default=None, description="<namespace>/<name> of the device registry ConfigMap."
    )
    created_namespaces: list[Name] = Field(
        default_factory=list,
        max_length=64,
        description="Namespaces the operator created (not adopted): the only ones Shred deletes.",
        json_schema_extra=SET_LIST,
    )
    storage_class: ResourceName | None = None
