"""The X.1369 control catalog: every requirement of clause 9 with its stable control id.

Generated once from the project's summary (shared/x1369.md) and kept in code so the product carries it;
tests/unit/test_controls.py fails when the two drift apart. Each control's `coverage` says how far iotsec goes,
judged against the requirement's own text, not against what iotsec does near it:

- `enforced`: a named mechanism of iotsec makes the whole requirement hold where iotsec is in charge (admission
  refuses what breaks it, or the operator reconciles the objects that make it hold), and `proofs` names at least one
  test that shows it doing so.
- `partial`: a mechanism enforces part of the text; `missing` says in one sentence what iotsec does not do (the rest
  is left to the cluster, another tool or the organisation). `proofs` names the tests of the part that is enforced.
- `evidenced`: iotsec does not make the requirement hold; it records or reports what lets an auditor judge it (the
  audit trail, anomaly alerts, metrics, other tools' reports). Never `met` from iotsec's configuration alone.
- `out-of-scope`: outside what a Kubernetes operator can do or see (physical security, SMS codes, device behaviour);
  kept so the conformance report can say so.

`proofs` are pytest node ids (`tests/unit/test_x.py::test_name` or `path::Class::test_name`);
tests/unit/test_controls_proofs.py checks that each one names a test that exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Coverage(StrEnum):
    ENFORCED = "enforced"
    PARTIAL = "partial"
    EVIDENCED = "evidenced"
    OUT_OF_SCOPE = "out-of-scope"


AREAS: dict[str, str] = {
    "9.1": "Application security",
    "9.2": "Data security",
    "9.3": "System security",
    "9.4": "Infrastructure security",
    "9.5": "Interface security",
    "9.6": "Operational security",
}

MECHANISMS: dict[str, str] = {
    "NP": "NetworkPolicy",
    "ADM": "admission check",
    "TEN": "TenantIsolation reconcile",
    "SD": "SecurityDomain reconcile",
    "BK": "BackupPolicy",
    "AU": "AuditPolicy",
    "KEY": "key/certificate material in Secrets",
    "MET": "metrics/report",
}


@dataclass(frozen=True)
class Control:
    id: str
    area: str
    requirement: str
    k8s_control: str
    mechanisms: tuple[str, ...]
    coverage: Coverage
    proofs: tuple[str, ...] = ()  # pytest node ids of the tests that show the mechanism meeting the text
    missing: str = ""  # what iotsec does not do about the requirement's text (partial, and evidenced where it matters)

    @property
    def clause(self) -> str:
        return self.id.removeprefix("X1369-").rsplit("-", 1)[0]

    @property
    def area_title(self) -> str:
        return AREAS[self.area]


_POLICY = "tests/unit/test_policy.py"
_POD16 = "tests/unit/test_pod_rules_16.py"
_NETPOL = "tests/unit/test_netpol_admission.py"
_DOMAIN = "tests/unit/test_securitydomain_builder.py"
_TENANT = "tests/unit/test_tenant_builder.py"
_NCA = "tests/unit/test_isolation_nca_render.py"
_DEVICES = "tests/unit/test_devices.py"
_APPKEYS = "tests/unit/test_appkeys.py"
_RUNNER = "tests/backup/test_runner.py"
_AUDIT = "tests/unit/test_audit_builder.py"
_E2E_TENANT = "tests/e2e/test_tenant_operator.py"
_E2E_BACKUP = "tests/e2e/test_deployed_backup.py"

_EACH_POD_RULE = f"{_POLICY}::test_each_pod_rule_fires_exactly_on_its_violation"
_EACH_OBJECT_RULE = f"{_POLICY}::test_each_object_rule_has_a_good_and_a_bad_case"
_APP_IDENTITY = f"{_TENANT}::test_each_application_gets_an_identity_a_scoped_role_and_a_key_secret"
_HOST_RESOURCES = (
    _EACH_POD_RULE,
    f"{_POD16}::test_pod_level_host_process_is_refused_at_the_pod_path",
    "tests/e2e/test_deployed_admission.py::test_a_privileged_host_network_argo_rollout_is_denied",
)
_TRUST = (
    f"{_DEVICES}::test_mtls_device_authentication_during_a_ca_rotation",
    f"{_DEVICES}::test_mtls_refuses_a_revoked_device",
    f"{_E2E_TENANT}::test_device_ca_and_trust_bundle_are_published",
)

# The tests that show each control's mechanism at work (every enforced control names at least one).
_PROOFS: dict[str, tuple[str, ...]] = {
    "X1369-9.1.1.1-1": (f"{_TENANT}::test_user_classes_become_roles_bound_to_their_groups",),
    "X1369-9.1.1.2-1": (_APP_IDENTITY, f"{_TENANT}::test_app_ids_are_unique_across_tenants"),
    "X1369-9.1.1.2-2": (_APP_IDENTITY, _EACH_POD_RULE),
    "X1369-9.1.1.2-3": (
        _EACH_POD_RULE,
        f"{_POLICY}::test_literal_secret_detection_in_env",
        "tests/unit/test_configmap_secrets.py::test_a_spring_config_map_and_the_deployment_taking_its_environment_are_both_denied",
        f"{_APPKEYS}::test_unknown_algorithm_is_named",
    ),
    "X1369-9.1.1.2-4": (
        _APP_IDENTITY,
        f"{_APPKEYS}::test_keys_are_unique",
        f"{_APPKEYS}::test_rotates_exactly_when_due",
        f"{_E2E_TENANT}::test_a_rotation_request_replaces_the_key_at_once",
    ),
    "X1369-9.1.1.2-5": (_APP_IDENTITY, f"{_E2E_TENANT}::test_tenant_gets_namespaces_bounds_rbac_identities_and_keys"),
    "X1369-9.1.1.3-1": (f"{_DEVICES}::test_device_certificate",),
    "X1369-9.1.1.3-2": (
        f"{_DEVICES}::test_200_devices_get_200_distinct_serials_and_keys",
        f"{_DEVICES}::test_rotation_keeps_old_devices_verifying_until_the_old_ca_expires",
        f"{_DEVICES}::test_crl_lists_revoked_serials_and_verify_device_honours_it",
        "tests/e2e/test_tenant_revocation.py::test_a_revocation_is_in_every_crl_within_five_seconds",
    ),
    "X1369-9.1.1.3-3": _TRUST,
    "X1369-9.1.1.3-4": (
        f"{_DEVICES}::test_ca_algorithms",
        f"{_DEVICES}::test_unsupported_ca_algorithms_are_refused",
        f"{_DEVICES}::test_device_certificate",
    ),
    "X1369-9.1.2-1": (
        f"{_TENANT}::test_user_classes_become_roles_bound_to_their_groups",
        f"{_E2E_TENANT}::test_users_get_their_class_privileges_and_nothing_in_other_tenants",
    ),
    "X1369-9.1.2-2": (_APP_IDENTITY,),
    "X1369-9.1.2-3": (f"{_DEVICES}::test_device_class_profile_sets_key_usage_and_eku",),
    "X1369-9.1.3.2-1": (
        f"{_TENANT}::test_quota_and_limits_follow_the_spec_and_defaults",
        f"{_E2E_TENANT}::test_the_quota_is_enforced_by_the_api_server",
        _EACH_OBJECT_RULE,
    ),
    "X1369-9.1.3.3-1": (
        _EACH_OBJECT_RULE,
        "tests/unit/test_audit_anomaly.py::test_request_rate_counts_every_request_per_user",
    ),
    "X1369-9.1.4-1": (_EACH_OBJECT_RULE, f"{_POLICY}::test_exposure_is_fine_in_access_and_interface_zones"),
    "X1369-9.1.4-3": (
        _EACH_POD_RULE,
        "tests/e2e/test_deployed_admission.py::test_check_offline_says_what_the_webhook_says_for_a_host_network_pod",
    ),
    "X1369-9.1.4-4": (_EACH_POD_RULE, f"{_TENANT}::test_quota_and_limits_follow_the_spec_and_defaults"),
    "X1369-9.1.5.1-1": (_APP_IDENTITY, f"{_APPKEYS}::test_keys_are_unique"),
    "X1369-9.1.5.3-1": (_EACH_OBJECT_RULE, f"{_TENANT}::test_key_material_is_never_rendered"),
    "X1369-9.1.5.4-1": (_APP_IDENTITY, f"{_TENANT}::test_quota_and_limits_follow_the_spec_and_defaults"),
    "X1369-9.2-1": (
        f"{_RUNNER}::test_backup_then_restore_after_damage_gives_back_every_byte",
        "tests/e2e/test_backup_operator.py::test_schedules_or_a_clear_reason_why_not",
        f"{_E2E_BACKUP}::test_a_restore_into_a_new_claim_gives_back_the_same_bytes",
    ),
    "X1369-9.2.1-1": (
        f"{_DOMAIN}::test_every_member_is_default_deny_both_ways",
        f"{_DOMAIN}::test_tenants_of_one_domain_cannot_reach_each_other_but_both_reach_the_platform",
        f"{_NCA}::test_no_connection_between_the_tenants",
        "tests/e2e/test_isolation_nca.py::test_no_connection_between_the_tenants",
    ),
    "X1369-9.2.2-1": (_EACH_OBJECT_RULE,),
    "X1369-9.2.2-2": (_EACH_OBJECT_RULE,),
    "X1369-9.2.3-1": (
        f"{_TENANT}::test_no_cluster_wide_rbac_is_ever_created",
        f"{_E2E_TENANT}::test_users_get_their_class_privileges_and_nothing_in_other_tenants",
        "tests/e2e/test_rbac.py::test_a_tenant_cannot_void_its_wall_or_read_platform_keys",
    ),
    "X1369-9.2.4-1": (_EACH_OBJECT_RULE, f"{_POLICY}::test_a_tenants_data_classes_decide_what_its_claims_may_carry"),
    "X1369-9.2.4-2": (
        _EACH_OBJECT_RULE,
        f"{_POLICY}::test_a_private_key_in_a_configmaps_binary_data_is_found",
        f"{_TENANT}::test_platform_keys_live_in_the_release_namespace_out_of_tenant_reach",
        "tests/e2e/test_rbac.py::test_a_tenant_cannot_void_its_wall_or_read_platform_keys",
    ),
    "X1369-9.2.4-3": (
        f"{_RUNNER}::test_verify_passes_on_a_good_repository_and_fails_after_a_pack_is_corrupted",
        "tests/unit/test_audit_store.py::test_an_edited_byte_is_located_at_its_record",
    ),
    "X1369-9.2.4-4": (
        f"{_RUNNER}::test_backup_then_restore_after_damage_gives_back_every_byte",
        "tests/e2e/test_backup_operator.py::test_restore_into_a_new_claim_and_never_over_a_live_one_by_accident",
        f"{_E2E_BACKUP}::test_a_restore_into_a_new_claim_gives_back_the_same_bytes",
    ),
    "X1369-9.2.4-5": (f"{_RUNNER}::test_retention_keeps_exactly_what_the_rules_say",),
    "X1369-9.2.4-6": (
        "tests/unit/test_tenant_reconcile.py::test_shred_deletes_only_namespaces_it_created_and_the_tenants_keys",
        f"{_E2E_TENANT}::test_shred_destroys_only_what_the_tenant_created_and_its_keys",
    ),
    "X1369-9.3.1-2": (f"{_POLICY}::test_management_ingress_without_tls_names_the_https_control",),
    "X1369-9.3.1-4": _HOST_RESOURCES,
    "X1369-9.3.2-1": (_EACH_POD_RULE, f"{_POD16}::test_floating_tags_fail_version_pinning"),
    "X1369-9.3.2-2": (_EACH_POD_RULE,),
    "X1369-9.3.2-3": (
        _EACH_POD_RULE,
        f"{_DOMAIN}::test_explicit_rules_open_exactly_their_ports_between_domains",
        f"{_NETPOL}::test_ports_beyond_the_allowed_ones_are_denied_and_named",
    ),
    "X1369-9.3.3-1": (_EACH_POD_RULE, f"{_POD16}::test_floating_tags_fail_version_pinning"),
    "X1369-9.3.3-2": (f"{_DOMAIN}::test_explicit_rules_open_exactly_their_ports_between_domains",),
    "X1369-9.4.1-1": (
        f"{_DOMAIN}::test_namespace_labels_carry_domain_zone_and_pod_security",
        f"{_DOMAIN}::test_internet_exposure_is_public_addresses_only",
        f"{_POLICY}::test_unassigned_namespace_gets_restricted_defaults_and_its_own_violation",
    ),
    "X1369-9.4.1-2": (
        f"{_DOMAIN}::test_every_member_is_default_deny_both_ways",
        f"{_DOMAIN}::test_security_levels_are_isolated_inside_a_namespace",
        f"{_NETPOL}::test_a_policy_cannot_widen_across_security_levels",
        "tests/e2e/test_isolation_nca.py::test_the_operator_isolated_every_member_namespace",
    ),
    "X1369-9.4.1-3": (
        f"{_DOMAIN}::test_explicit_rules_open_exactly_their_ports_between_domains",
        f"{_NETPOL}::test_a_peer_domain_the_domain_does_not_allow_is_denied",
        f"{_NCA}::test_nca_sees_exactly_the_declared_connectivity",
    ),
    "X1369-9.4.1-4": (_EACH_OBJECT_RULE, f"{_POLICY}::test_exposure_is_fine_in_access_and_interface_zones"),
    "X1369-9.4.3-1": (
        _EACH_POD_RULE,
        "tests/webhook/test_webhook.py::test_kubectl_debug_cannot_add_a_privileged_ephemeral_container",
        "tests/e2e/test_deployed_admission.py::test_a_privileged_host_network_argo_rollout_is_denied",
    ),
    "X1369-9.5.1-1": (f"{_DOMAIN}::test_explicit_rules_open_exactly_their_ports_between_domains", _APP_IDENTITY),
    "X1369-9.5.2-1": (
        f"{_DOMAIN}::test_cidr_peers_with_except_and_deny_list",
        f"{_NETPOL}::test_declared_cidrs_are_admitted_inside_and_denied_outside",
    ),
    "X1369-9.5.2-2": (
        f"{_DOMAIN}::test_cidr_peers_with_except_and_deny_list",
        f"{_DOMAIN}::test_deny_list_covering_every_peer_drops_the_rule_instead_of_opening_it",
    ),
    "X1369-9.5.3-1": (_EACH_OBJECT_RULE,),
    "X1369-9.6.1-2": (
        f"{_RUNNER}::test_drill_restores_into_scratch_and_measures_the_restore",
        f"{_E2E_BACKUP}::test_a_drill_restores_and_its_measured_time_lands_in_the_status",
    ),
    "X1369-9.6.3-1": (
        _EACH_OBJECT_RULE,
        f"{_POLICY}::test_the_installations_own_operator_binding_is_admitted_and_nothing_beside_it",
        "tests/unit/test_operator_fence.py::test_the_webhook_denies_the_escape_with_the_control_id",
        "tests/e2e/test_rbac.py::test_the_operator_identity_cannot_escape",
    ),
    "X1369-9.6.3-2": _HOST_RESOURCES,
    "X1369-9.6.4-3": (
        f"{_AUDIT}::test_backup_reference_and_condition",
        f"{_AUDIT}::test_the_example_backup_policy_backs_up_the_example_audit_store",
        "tests/e2e/test_audit_operator.py::test_status_waits_for_the_sink_and_flags_the_missing_backup_policy",
    ),
    "X1369-9.6.6-1": (
        f"{_RUNNER}::test_offsite_copy_holds_the_same_snapshot_and_restores_identical_bytes",
        f"{_RUNNER}::test_failing_offsite_fails_the_backup_but_keeps_the_primary_snapshot",
        f"{_E2E_BACKUP}::test_a_backup_job_of_the_products_image_backs_up_to_the_claim_and_the_sftp_server",
    ),
    "X1369-9.6.6-2": (
        f"{_RUNNER}::test_backup_then_restore_after_damage_gives_back_every_byte",
        f"{_E2E_BACKUP}::test_a_drill_restores_and_its_measured_time_lands_in_the_status",
    ),
}

_TRIVY = "Trivy Operator VulnerabilityReports are read as evidence when installed"
_TLS_ONLY_AT_INGRESS = (
    "TLS is required only where traffic enters through an Ingress: traffic between pods and to NodePort or "
    "LoadBalancer Services need not be encrypted"
)

# What iotsec does not do about each requirement's text (every partial control says it).
_MISSING: dict[str, str] = {
    "X1369-9.1.1.1-1": "iotsec cannot see or enforce how users authenticate: personal, stable, unique identities are "
    "the identity provider's; iotsec only binds tenant roles to groups",
    "X1369-9.1.1.1-5": "nothing limits failed logins or locks an account: repeated 401/403 from one user or address "
    "are detected in the audit stream and alerted",
    "X1369-9.1.1.2-2": "each application gets a ServiceAccount and a key and the default token is refused, but nothing "
    "makes the invoked service authenticate its caller (no mTLS or token check between workloads)",
    "X1369-9.1.1.2-5": "per-app Roles limit what an application may do through the Kubernetes API; calls to the "
    "platform's own service interfaces are authorised by those services, not by iotsec",
    "X1369-9.1.1.3-3": "iotsec issues device certificates and publishes the CA bundle and CRL, but does not check that "
    "the ingress or broker requires client certificates and verifies them against that bundle",
    "X1369-9.1.2-3": "a device class sets its certificates' key usage and validity; what a device of the class may do "
    "is the broker's authorisation, which iotsec does not configure",
    "X1369-9.1.3.2-1": "ResourceQuotas cap a tenant's resources and interface-zone Ingress must carry a rate-limit "
    "annotation, but only an ingress controller that reads it applies the limit, and no per-user or "
    "per-application usage total is counted or cut off",
    "X1369-9.1.3.3-1": "nothing suspends a user or an application on abnormal behaviour: anomaly rules over the audit "
    "stream raise events and alerts only, and access duration is not limited",
    "X1369-9.1.3.4-1": "iotsec sees no device behaviour (time, visits, location): device monitoring belongs to the "
    "device platform",
    "X1369-9.1.4-1": "a rate-limit annotation on Ingress and exposure only from access and interface zones shrink the "
    "target, but nothing absorbs or filters a flood (volumetric, SYN or application-layer DDoS): that is "
    "the network edge's or the cloud provider's",
    "X1369-9.1.4-3": "iotsec checks workload configuration (admission and the background scan) but scans neither hosts "
    f"nor images for vulnerabilities ({_TRIVY}) and tests no password for weakness",
    "X1369-9.1.4-4": "CPU and memory limits and LimitRange defaults stop resource exhaustion; connection and request "
    "time limits (timeouts, idle limits) are neither set nor checked",
    "X1369-9.1.4-5": "no network intrusion detection: iotsec records denied admissions, policy violations and "
    "audit-stream anomalies (user, source IP, target, time) and alerts on them",
    "X1369-9.1.5.1-1": "iotsec issues per-application identities and keys but authenticates no developer and does not "
    "make an exposed capability check its caller's key",
    "X1369-9.1.5.3-1": "keys live only in Secrets and exposed Ingress must use TLS, but the encryption of Secrets at "
    "rest is the API server's configuration, which iotsec does not check, and pod-to-pod traffic may be plain",
    "X1369-9.1.5.4-1": "per-app Roles authorise Kubernetes API calls by type and quotas bound resources; no limit on "
    "the frequency or total of an application's invocations is applied",
    "X1369-9.1.5.5-1": "Kubernetes API calls are audited and anomaly rules alert over a threshold; nothing suspends "
    "the caller, and calls to the platform's own services are not tracked",
    "X1369-9.2.2-1": _TLS_ONLY_AT_INGRESS,
    "X1369-9.2.2-2": _TLS_ONLY_AT_INGRESS,
    "X1369-9.2.4-3": "integrity is checked for backups (restic check) and the audit log (hash chain); live data in the "
    "tenants' volumes is not integrity-checked",
    "X1369-9.2.4-5": "backup retention archives and prunes snapshots; applications' temporary data is not cleaned by "
    "iotsec",
    "X1369-9.2.4-6": "reclaimPolicy defaults to Retain, and a volume is wiped only cryptographically when a tenant "
    "deleted with Shred loses its volume key (per-tenant encrypted class); other volumes are wiped only if "
    "the storage backend does it",
    "X1369-9.3.1-1": "the API server records Kubernetes logins and operations once its audit flags use the rendered "
    "Policy; logins to nodes and applications are not recorded by iotsec",
    "X1369-9.3.2-1": f"pinning an image does not patch it: {_TRIVY}, but nothing updates images",
    "X1369-9.3.2-2": "a read-only root filesystem and no privilege escalation stop installing components at run time; "
    "what the image itself ships is not checked",
    "X1369-9.3.3-1": f"pinning keeps middleware versions known, not current: {_TRIVY}, but nothing updates them",
    "X1369-9.3.3-2": "only declared ports are reachable; interfaces a middleware serves on an allowed port (admin "
    "consoles, debug endpoints) are neither disabled nor detected",
    "X1369-9.4.1-4": "zones and exposure are enforced, but there is no intrusion detection at the boundary: iotsec "
    "records denied admissions and audit-stream anomalies, not network intrusions",
    "X1369-9.4.3-1": "containers are isolated (restricted Pod Security and more), but hosts are neither hardened nor "
    "checked: the nodes' OS, kubelet and container runtime settings are outside iotsec",
    "X1369-9.5.1-1": "NetworkPolicies admit peers by namespace and pod labels, which proves no legitimacy: no mutual "
    "authentication between service systems (mTLS, signed tokens) is required",
    "X1369-9.5.1-2": "operations on Kubernetes resources are logged; operations inside the service systems are not",
    "X1369-9.5.2-1": "credentials are checked by the service, not by iotsec, and ipBlock rules see the caller's address "
    "only where it is preserved (not behind an Ingress controller, a proxy or SNAT)",
    "X1369-9.5.3-1": "one of the known rate-limit annotations is required on interface-zone Ingress, but nothing checks "
    "that the ingress controller honours it (iotsec.io/rate-limit is read by no controller) or that excess "
    "requests get an error",
    "X1369-9.6.1-1": "iotsec raises alerts, events and metrics; the incident response process itself (runbooks, "
    "on-call, escalation) is not part of it",
    "X1369-9.6.1-2": "only data-restore drills are scheduled and measured; drills of other emergencies (intrusion, "
    "outage, key compromise) are not",
    "X1369-9.6.4-7": "abnormal access is detected and alerted in near real time; nothing blocks it",
    "X1369-9.6.5-1": "no network or host intrusion detection: admission violations and audit-stream anomalies are "
    "surfaced as events, metrics and alerts",
    "X1369-9.6.6-2": "restores and drills are proven, but nothing makes backups immutable (no append-only repository "
    "or object lock): whoever can read a repository's credentials can delete its snapshots",
}


def _c(cid: str, area: str, requirement: str, k8s_control: str, mechanisms: str, coverage: Coverage) -> Control:
    return Control(
        cid,
        area,
        requirement,
        k8s_control,
        tuple(m for m in mechanisms.split() if m),
        coverage,
        _PROOFS.get(cid, ()),
        _MISSING.get(cid, ""),
    )


# fmt: off
CONTROLS: tuple[Control, ...] = (
    _c('X1369-9.1.1.1-1', '9.1', 'every user has one stable unique id', "user identities come from the cluster's authn; RBAC subjects are groups/users, never shared accounts", 'TEN', Coverage.PARTIAL),
    _c('X1369-9.1.1.1-2', '9.1', 'periodic weak-password detection; passwords encrypted in transit; forced periodic change for high-security services', 'out of scope (identity provider)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.1-3', '9.1', 'one-time SMS codes: checked, invalidated after use, attempts limited', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.1-4', '9.1', 'visual CAPTCHA at login with anti-recognition measures', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.1-5', '9.1', 'brute-force/credential-stuffing control: limit failures by IP, device, lock time, concurrent logins', 'detection from API audit events (repeated 401/403 from one user or source IP)', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.1.1.1-6', '9.1', 'rigorous identity check on password reset/recovery', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.2-1', '9.1', 'unique id per application', 'each declared application gets a ServiceAccount and an app id label', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.1.2-2', '9.1', 'only authenticated applications invoke services', 'workloads run under their app ServiceAccount; default SA token not automounted', 'TEN ADM', Coverage.PARTIAL),
    _c('X1369-9.1.1.2-3', '9.1', 'no plaintext keys, no weak algorithms (MD5) in app authentication', 'literal secrets in env/args rejected; keys generated with strong algorithms only; weak-algorithm annotations rejected', 'ADM KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.2-4', '9.1', 'a different key per application; create, distribute, store, update keys', 'one key Secret per application, rotated on schedule with an overlap window', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.2-5', '9.1', 'interface calls authenticated to limit scope and authority', 'per-app Role limited to declared resources', 'TEN', Coverage.PARTIAL),
    _c('X1369-9.1.1.3-1', '9.1', 'unique device id bound to manufacturer, type, model', 'device certificates carry id and attributes in their subject', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.3-2', '9.1', 'unique key per device, bound to its id; key management functions', 'per-tenant device CA in a Secret, rotation, issuing per-device certs', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.3-3', '9.1', 'authenticate devices on access', 'device CA bundle published for the ingress/broker to verify client certs', 'KEY', Coverage.PARTIAL),
    _c('X1369-9.1.1.3-4', '9.1', 'no plaintext/weak keys for devices', '≥ 2048-bit RSA or EC P-256/Ed25519 only; SHA-256 or better', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.2-1', '9.1', 'privileges by user class/group', 'tenant user classes (admin, operator, viewer, ...) → Roles + RoleBindings to groups', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.2-2', '9.1', 'privileges by application class', 'app classes → Roles bound to the app ServiceAccounts', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.2-3', '9.1', 'privileges by device type/class', 'device classes → certificate profiles (key usage, validity)', 'KEY', Coverage.PARTIAL),
    _c('X1369-9.1.3.1-1', '9.1', 'IoT (SIM) card functions limited to the minimum necessary per service type', 'out of scope (connectivity platform)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.3.2-1', '9.1', 'limit total amount and frequency of service usage; cut off over threshold', 'ResourceQuota, LimitRange; rate limits required on interface-zone Ingress', 'TEN ADM', Coverage.PARTIAL),
    _c('X1369-9.1.3.3-1', '9.1', "limit users' traffic, frequency and access duration; suspend on abnormal behaviour", 'rate limits on exposed Ingress; anomaly rules on audit events', 'ADM AU', Coverage.PARTIAL),
    _c('X1369-9.1.3.4-1', '9.1', 'device behaviour monitoring (unusual time, visits, location) with alarms', 'out of scope (device platform); metrics hooks only', 'MET', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.3.5-1', '9.1', 'service risk tracking: totals and peak rates, card/device separation (IMEI)', 'out of scope (device platform)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.4-1', '9.1', 'anti-DDoS', 'rate limits on exposed ingress; only access/interface domains may be exposed', 'ADM SD', Coverage.PARTIAL),
    _c('X1369-9.1.4-2', '9.1', 'web vulnerability scanning (upload, SQLi, XSS, CSRF, SSRF)', 'out of scope (scanners)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.4-3', '9.1', 'host vulnerability and configuration scanning, weak passwords', "partly: admission re-check of running workloads' configuration", 'ADM', Coverage.PARTIAL),
    _c('X1369-9.1.4-4', '9.1', 'limit connection/resource time to avoid exhaustion', 'CPU/memory limits required on every container; LimitRange defaults', 'ADM TEN', Coverage.PARTIAL),
    _c('X1369-9.1.4-5', '9.1', 'intrusion detection with source IP, type, target, time; alarm', 'denied admissions and policy violations recorded as audit events + metrics', 'AU MET', Coverage.EVIDENCED),
    _c('X1369-9.1.5.1-1', '9.1', 'authenticate developers and applications that use exposed capabilities', 'per-app identity and keys (as 9.1.1.2)', 'TEN KEY', Coverage.PARTIAL),
    _c('X1369-9.1.5.2-1', '9.1', 'harden applications against tampering and decompilation', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.5.3-1', '9.1', 'confidentiality and integrity of account/credential data in storage, transit and use', 'keys only in Secrets; TLS required on exposed Ingress', 'KEY ADM', Coverage.PARTIAL),
    _c('X1369-9.1.5.4-1', '9.1', 'authorise capability invocations by frequency, total and type', 'per-app Roles; quotas', 'TEN', Coverage.PARTIAL),
    _c('X1369-9.1.5.5-1', '9.1', 'track invocations; suspend and alarm over limit', 'audit of invocations; anomaly rules', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.2-1', '9.2', 'regular backup of core data and a restore mechanism', 'BackupPolicy: schedule, retention, restore', 'BK', Coverage.ENFORCED),
    _c('X1369-9.2.1-1', '9.2', 'different data in isolated environments; strict control between fields', 'namespace per tenant/service system; cross-tenant traffic denied', 'TEN NP', Coverage.ENFORCED),
    _c('X1369-9.2.2-1', '9.2', 'confidentiality of sensitive data in transit', 'Ingress must terminate TLS; management endpoints HTTPS only', 'ADM', Coverage.PARTIAL),
    _c('X1369-9.2.2-2', '9.2', 'integrity of sensitive data in transit', 'TLS (authenticated encryption) required as above', 'ADM', Coverage.PARTIAL),
    _c('X1369-9.2.3-1', '9.2', "users reach only their own service system's data", 'RBAC per tenant; no cross-tenant Role bindings', 'TEN ADM', Coverage.ENFORCED),
    _c('X1369-9.2.4-1', '9.2', 'classify data by importance; protect important data', '`iotsec.io/data-class` on PVCs; confidential/secret classes only on encrypted StorageClasses', 'ADM TEN', Coverage.ENFORCED),
    _c('X1369-9.2.4-2', '9.2', 'secure key storage', 'keys only in Secrets owned by the operator, never in ConfigMaps/env literals; RBAC limits readers', 'KEY ADM', Coverage.ENFORCED),
    _c('X1369-9.2.4-3', '9.2', 'integrity detection for especially sensitive data', 'backups verified (checksums/`restic check`); audit log hash chain', 'BK AU', Coverage.PARTIAL),
    _c('X1369-9.2.4-4', '9.2', 'complete backup and restore', 'BackupPolicy + tested restore path', 'BK', Coverage.ENFORCED),
    _c('X1369-9.2.4-5', '9.2', 'archive data; clean temporary data periodically', 'retention/prune in BackupPolicy', 'BK', Coverage.PARTIAL),
    _c('X1369-9.2.4-6', '9.2', 'storage can be released and wiped', 'reclaim policy on tenant StorageClasses; documented wipe', 'TEN', Coverage.PARTIAL),
    _c('X1369-9.3.1-1', '9.3', 'system logs of logins and operations', 'API server audit Policy rendered by AuditPolicy', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.3.1-2', '9.3', 'remote HTTP administration over HTTPS', 'Ingress in management domain must have TLS', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.3.1-3', '9.3', 'idle CLI sessions logged out', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.3.1-4', '9.3', 'access control to host resources', 'no hostPath/hostNetwork/hostPID/hostIPC; restricted Pod Security', 'ADM SD', Coverage.ENFORCED),
    _c('X1369-9.3.2-1', '9.3', 'OS/software patched in time', 'images pinned (digest or immutable tag, never `latest`), from allowed registries', 'ADM', Coverage.PARTIAL),
    _c('X1369-9.3.2-2', '9.3', 'only necessary components installed', 'read-only root filesystem; no privilege escalation', 'ADM', Coverage.PARTIAL),
    _c('X1369-9.3.2-3', '9.3', 'only necessary ports open', 'container ports must be declared; NetworkPolicies open only declared ports', 'ADM NP', Coverage.ENFORCED),
    _c('X1369-9.3.3-1', '9.3', 'middleware versions and patches kept current', 'image rules as 9.3.2-1', 'ADM', Coverage.PARTIAL),
    _c('X1369-9.3.3-2', '9.3', 'unneeded middleware interfaces disabled', 'only declared ports open (as 9.3.2-3)', 'ADM NP', Coverage.PARTIAL),
    _c('X1369-9.3.3-3', '9.3', 'middleware banners (name/version) not disclosed', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.4.1-1', '9.4', 'security domains between platform/internet, platform/support systems, between service systems; boundaries around the access and core domains', 'SecurityDomain groups namespaces into zones (access, core, management, interface, support)', 'SD', Coverage.ENFORCED),
    _c('X1369-9.4.1-2', '9.4', 'each service system in its own segment; all segments isolated by default; isolate different security levels inside a segment (PVLAN)', 'default-deny ingress+egress NetworkPolicy per member namespace; pods of different `iotsec.io/security-level` in one namespace cannot talk', 'SD NP', Coverage.ENFORCED),
    _c('X1369-9.4.1-3', '9.4', 'configured mutual-access policy between domains and systems', 'explicit `allow` rules (peer domain, ports) → NetworkPolicy rules; nothing else passes', 'SD NP', Coverage.ENFORCED),
    _c('X1369-9.4.1-4', '9.4', 'management / service / interface domains; boundary access control and intrusion detection', 'zone types; only the access/interface zones may have internet ingress/egress or NodePort/LoadBalancer/Ingress', 'SD ADM', Coverage.PARTIAL),
    _c('X1369-9.4.2-1', '9.4', 'physical security (site, power, fire, water, static, climate)', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.4.3-1', '9.4', 'virtualisation security: isolate VMs/containers, harden hosts', 'no privileged containers, drop ALL capabilities, seccomp RuntimeDefault, runAsNonRoot', 'ADM', Coverage.PARTIAL),
    _c('X1369-9.4.4-1', '9.4', 'hardware baseline configuration; trusted computing', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.5.1-1', '9.5', 'verify legitimacy between service systems', 'NetworkPolicy peers + per-app identities', 'SD TEN', Coverage.PARTIAL),
    _c('X1369-9.5.1-2', '9.5', 'full operation log of invoked resources', 'audit', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.5.2-1', '9.5', 'authorise callers by source IP range as well as credentials', 'interface-zone ingress limited to declared CIDRs (NetworkPolicy ipBlock)', 'SD', Coverage.PARTIAL),
    _c('X1369-9.5.2-2', '9.5', 'allow/deny lists for interfaces needing user rights', 'RBAC + allow/deny lists in SecurityDomain', 'SD', Coverage.ENFORCED),
    _c('X1369-9.5.3-1', '9.5', 'flow control; excess concurrent requests rejected with an error', 'rate-limit annotations required on interface-zone Ingress', 'ADM', Coverage.PARTIAL),
    _c('X1369-9.6.1-1', '9.6', 'incident response mechanism', 'documented runbooks; alerts', 'MET', Coverage.EVIDENCED),
    _c('X1369-9.6.1-2', '9.6', 'regular emergency drills', 'scheduled restore drills in BackupPolicy', 'BK', Coverage.PARTIAL),
    _c('X1369-9.6.2-1', '9.6', 'situation awareness: monitor, assess, visualise, alert', 'Prometheus metrics, conformance report, dashboards', 'MET', Coverage.EVIDENCED),
    _c('X1369-9.6.3-1', '9.6', 'high privileges only for trusted staff', 'bindings to cluster-admin/escalating roles only for declared trusted groups', 'ADM TEN', Coverage.ENFORCED),
    _c('X1369-9.6.3-2', '9.6', 'host resource access by policy', 'as 9.3.1-4', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.6.4-1', '9.6', 'record all administrator activity', "audit Policy at RequestResponse for RBAC, secrets metadata, iotsec resources; operator's own actions audited", 'AU', Coverage.EVIDENCED),
    _c('X1369-9.6.4-2', '9.6', 'audit log not lost when storage is nearly full', 'size-capped segments, rotation, alert before loss, never drop silently', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.6.4-3', '9.6', 'audit logs backed up', 'AuditPolicy names a BackupPolicy for its store', 'AU BK', Coverage.ENFORCED),
    _c('X1369-9.6.4-4', '9.6', 'audit logs protected from unauthorised read/change/deletion', 'tamper-evident hash chain + signature; RBAC on the store', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.6.4-5', '9.6', 'audit logs can be exported and deleted', 'export and retention', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.6.4-6', '9.6', 'secure log access in transit', 'TLS on the audit sink', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.6.4-7', '9.6', 'real-time monitoring of abnormal connections/access', 'anomaly rules over audit events → events, metrics, alerts', 'AU MET', Coverage.EVIDENCED),
    _c('X1369-9.6.5-1', '9.6', 'intrusion detection', 'violations and anomalies surfaced as above', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.6.6-1', '9.6', 'remote redundant backup ready in time', 'off-site second backup target', 'BK', Coverage.ENFORCED),
    _c('X1369-9.6.6-2', '9.6', 'restore sensitive data quickly after malicious deletion', 'restore path, restore drills, backups immutable to tenants', 'BK', Coverage.PARTIAL),
)
# fmt: on

BY_ID: dict[str, Control] = {control.id: control for control in CONTROLS}
_UNKNOWN = (_PROOFS.keys() | _MISSING.keys()) - BY_ID.keys()
if _UNKNOWN:  # a mistyped id would silently drop its proofs or its gap
    raise ValueError(f"proofs or missing given for unknown control ids: {sorted(_UNKNOWN)}")


def control(control_id: str) -> Control:
    """The control with this id; KeyError names the unknown id."""
    try:
        return BY_ID[control_id]
    except KeyError:
        raise KeyError(f"unknown X.1369 control id {control_id!r}") from None
