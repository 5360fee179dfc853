"""The X.1369 control catalog: every requirement of clause 9 with its stable control id.

Generated once from the project's summary (shared/x1369.md) and kept in code so the product carries it;
tests/unit/test_controls.py fails when the two drift apart. `coverage` says whether iotsec enforces a
control (a check or reconciled object makes it hold), evidences it (records or reports show it) or leaves
it out of scope, so the conformance report can say so honestly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Coverage(StrEnum):
    ENFORCED = "enforced"
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

    @property
    def clause(self) -> str:
        return self.id.removeprefix("X1369-").rsplit("-", 1)[0]

    @property
    def area_title(self) -> str:
        return AREAS[self.area]


def _c(cid: str, area: str, requirement: str, k8s_control: str, mechanisms: str, coverage: Coverage) -> Control:
    return Control(cid, area, requirement, k8s_control, tuple(m for m in mechanisms.split() if m), coverage)


# fmt: off
CONTROLS: tuple[Control, ...] = (
    _c('X1369-9.1.1.1-1', '9.1', 'every user has one stable unique id', "user identities come from the cluster's authn; RBAC subjects are groups/users, never shared accounts", 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.1.1-2', '9.1', 'periodic weak-password detection; passwords encrypted in transit; forced periodic change for high-security services', 'out of scope (identity provider)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.1-3', '9.1', 'one-time SMS codes: checked, invalidated after use, attempts limited', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.1-4', '9.1', 'visual CAPTCHA at login with anti-recognition measures', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.1-5', '9.1', 'brute-force/credential-stuffing control: limit failures by IP, device, lock time, concurrent logins', 'detection from API audit events (repeated 401/403 from one user or source IP)', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.1.1.1-6', '9.1', 'rigorous identity check on password reset/recovery', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.1.2-1', '9.1', 'unique id per application', 'each declared application gets a ServiceAccount and an app id label', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.1.2-2', '9.1', 'only authenticated applications invoke services', 'workloads run under their app ServiceAccount; default SA token not automounted', 'TEN ADM', Coverage.ENFORCED),
    _c('X1369-9.1.1.2-3', '9.1', 'no plaintext keys, no weak algorithms (MD5) in app authentication', 'literal secrets in env/args rejected; keys generated with strong algorithms only; weak-algorithm annotations rejected', 'ADM KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.2-4', '9.1', 'a different key per application; create, distribute, store, update keys', 'one key Secret per application, rotated on schedule with an overlap window', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.2-5', '9.1', 'interface calls authenticated to limit scope and authority', 'per-app Role limited to declared resources', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.1.3-1', '9.1', 'unique device id bound to manufacturer, type, model', 'device certificates carry id and attributes in their subject', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.3-2', '9.1', 'unique key per device, bound to its id; key management functions', 'per-tenant device CA in a Secret, rotation, issuing per-device certs', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.3-3', '9.1', 'authenticate devices on access', 'device CA bundle published for the ingress/broker to verify client certs', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.1.3-4', '9.1', 'no plaintext/weak keys for devices', '≥ 2048-bit RSA or EC P-256/Ed25519 only; SHA-256 or better', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.2-1', '9.1', 'privileges by user class/group', 'tenant user classes (admin, operator, viewer, ...) → Roles + RoleBindings to groups', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.2-2', '9.1', 'privileges by application class', 'app classes → Roles bound to the app ServiceAccounts', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.2-3', '9.1', 'privileges by device type/class', 'device classes → certificate profiles (key usage, validity)', 'KEY', Coverage.ENFORCED),
    _c('X1369-9.1.3.1-1', '9.1', 'IoT (SIM) card functions limited to the minimum necessary per service type', 'out of scope (connectivity platform)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.3.2-1', '9.1', 'limit total amount and frequency of service usage; cut off over threshold', 'ResourceQuota, LimitRange; rate limits required on interface-zone Ingress', 'TEN ADM', Coverage.ENFORCED),
    _c('X1369-9.1.3.3-1', '9.1', "limit users' traffic, frequency and access duration; suspend on abnormal behaviour", 'rate limits on exposed Ingress; anomaly rules on audit events', 'ADM AU', Coverage.ENFORCED),
    _c('X1369-9.1.3.4-1', '9.1', 'device behaviour monitoring (unusual time, visits, location) with alarms', 'out of scope (device platform); metrics hooks only', 'MET', Coverage.EVIDENCED),
    _c('X1369-9.1.3.5-1', '9.1', 'service risk tracking: totals and peak rates, card/device separation (IMEI)', 'out of scope (device platform)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.4-1', '9.1', 'anti-DDoS', 'rate limits on exposed ingress; only access/interface domains may be exposed', 'ADM SD', Coverage.ENFORCED),
    _c('X1369-9.1.4-2', '9.1', 'web vulnerability scanning (upload, SQLi, XSS, CSRF, SSRF)', 'out of scope (scanners)', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.4-3', '9.1', 'host vulnerability and configuration scanning, weak passwords', "partly: admission re-check of running workloads' configuration", 'ADM', Coverage.ENFORCED),
    _c('X1369-9.1.4-4', '9.1', 'limit connection/resource time to avoid exhaustion', 'CPU/memory limits required on every container; LimitRange defaults', 'ADM TEN', Coverage.ENFORCED),
    _c('X1369-9.1.4-5', '9.1', 'intrusion detection with source IP, type, target, time; alarm', 'denied admissions and policy violations recorded as audit events + metrics', 'AU MET', Coverage.EVIDENCED),
    _c('X1369-9.1.5.1-1', '9.1', 'authenticate developers and applications that use exposed capabilities', 'per-app identity and keys (as 9.1.1.2)', 'TEN KEY', Coverage.ENFORCED),
    _c('X1369-9.1.5.2-1', '9.1', 'harden applications against tampering and decompilation', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.1.5.3-1', '9.1', 'confidentiality and integrity of account/credential data in storage, transit and use', 'keys only in Secrets; TLS required on exposed Ingress', 'KEY ADM', Coverage.ENFORCED),
    _c('X1369-9.1.5.4-1', '9.1', 'authorise capability invocations by frequency, total and type', 'per-app Roles; quotas', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.1.5.5-1', '9.1', 'track invocations; suspend and alarm over limit', 'audit of invocations; anomaly rules', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.2-1', '9.2', 'regular backup of core data and a restore mechanism', 'BackupPolicy: schedule, retention, restore', 'BK', Coverage.ENFORCED),
    _c('X1369-9.2.1-1', '9.2', 'different data in isolated environments; strict control between fields', 'namespace per tenant/service system; cross-tenant traffic denied', 'TEN NP', Coverage.ENFORCED),
    _c('X1369-9.2.2-1', '9.2', 'confidentiality of sensitive data in transit', 'Ingress must terminate TLS; management endpoints HTTPS only', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.2.2-2', '9.2', 'integrity of sensitive data in transit', 'TLS (authenticated encryption) required as above', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.2.3-1', '9.2', "users reach only their own service system's data", 'RBAC per tenant; no cross-tenant Role bindings', 'TEN ADM', Coverage.ENFORCED),
    _c('X1369-9.2.4-1', '9.2', 'classify data by importance; protect important data', '`iotsec.io/data-class` on PVCs; confidential/secret classes only on encrypted StorageClasses', 'ADM TEN', Coverage.ENFORCED),
    _c('X1369-9.2.4-2', '9.2', 'secure key storage', 'keys only in Secrets owned by the operator, never in ConfigMaps/env literals; RBAC limits readers', 'KEY ADM', Coverage.ENFORCED),
    _c('X1369-9.2.4-3', '9.2', 'integrity detection for especially sensitive data', 'backups verified (checksums/`restic check`); audit log hash chain', 'BK AU', Coverage.ENFORCED),
    _c('X1369-9.2.4-4', '9.2', 'complete backup and restore', 'BackupPolicy + tested restore path', 'BK', Coverage.ENFORCED),
    _c('X1369-9.2.4-5', '9.2', 'archive data; clean temporary data periodically', 'retention/prune in BackupPolicy', 'BK', Coverage.ENFORCED),
    _c('X1369-9.2.4-6', '9.2', 'storage can be released and wiped', 'reclaim policy on tenant StorageClasses; documented wipe', 'TEN', Coverage.ENFORCED),
    _c('X1369-9.3.1-1', '9.3', 'system logs of logins and operations', 'API server audit Policy rendered by AuditPolicy', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.3.1-2', '9.3', 'remote HTTP administration over HTTPS', 'Ingress in management domain must have TLS', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.3.1-3', '9.3', 'idle CLI sessions logged out', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.3.1-4', '9.3', 'access control to host resources', 'no hostPath/hostNetwork/hostPID/hostIPC; restricted Pod Security', 'ADM SD', Coverage.ENFORCED),
    _c('X1369-9.3.2-1', '9.3', 'OS/software patched in time', 'images pinned (digest or immutable tag, never `latest`), from allowed registries', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.3.2-2', '9.3', 'only necessary components installed', 'read-only root filesystem; no privilege escalation', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.3.2-3', '9.3', 'only necessary ports open', 'container ports must be declared; NetworkPolicies open only declared ports', 'ADM NP', Coverage.ENFORCED),
    _c('X1369-9.3.3-1', '9.3', 'middleware versions and patches kept current', 'image rules as 9.3.2-1', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.3.3-2', '9.3', 'unneeded middleware interfaces disabled', 'only declared ports open (as 9.3.2-3)', 'ADM NP', Coverage.ENFORCED),
    _c('X1369-9.3.3-3', '9.3', 'middleware banners (name/version) not disclosed', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.4.1-1', '9.4', 'security domains between platform/internet, platform/support systems, between service systems; boundaries around the access and core domains', 'SecurityDomain groups namespaces into zones (access, core, management, interface, support)', 'SD', Coverage.ENFORCED),
    _c('X1369-9.4.1-2', '9.4', 'each service system in its own segment; all segments isolated by default; isolate different security levels inside a segment (PVLAN)', 'default-deny ingress+egress NetworkPolicy per member namespace; pods of different `iotsec.io/security-level` in one namespace cannot talk', 'SD NP', Coverage.ENFORCED),
    _c('X1369-9.4.1-3', '9.4', 'configured mutual-access policy between domains and systems', 'explicit `allow` rules (peer domain, ports) → NetworkPolicy rules; nothing else passes', 'SD NP', Coverage.ENFORCED),
    _c('X1369-9.4.1-4', '9.4', 'management / service / interface domains; boundary access control and intrusion detection', 'zone types; only the access/interface zones may have internet ingress/egress or NodePort/LoadBalancer/Ingress', 'SD ADM', Coverage.ENFORCED),
    _c('X1369-9.4.2-1', '9.4', 'physical security (site, power, fire, water, static, climate)', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.4.3-1', '9.4', 'virtualisation security: isolate VMs/containers, harden hosts', 'no privileged containers, drop ALL capabilities, seccomp RuntimeDefault, runAsNonRoot', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.4.4-1', '9.4', 'hardware baseline configuration; trusted computing', 'out of scope', '', Coverage.OUT_OF_SCOPE),
    _c('X1369-9.5.1-1', '9.5', 'verify legitimacy between service systems', 'NetworkPolicy peers + per-app identities', 'SD TEN', Coverage.ENFORCED),
    _c('X1369-9.5.1-2', '9.5', 'full operation log of invoked resources', 'audit', 'AU', Coverage.EVIDENCED),
    _c('X1369-9.5.2-1', '9.5', 'authorise callers by source IP range as well as credentials', 'interface-zone ingress limited to declared CIDRs (NetworkPolicy ipBlock)', 'SD', Coverage.ENFORCED),
    _c('X1369-9.5.2-2', '9.5', 'allow/deny lists for interfaces needing user rights', 'RBAC + allow/deny lists in SecurityDomain', 'SD', Coverage.ENFORCED),
    _c('X1369-9.5.3-1', '9.5', 'flow control; excess concurrent requests rejected with an error', 'rate-limit annotations required on interface-zone Ingress', 'ADM', Coverage.ENFORCED),
    _c('X1369-9.6.1-1', '9.6', 'incident response mechanism', 'documented runbooks; alerts', 'MET', Coverage.EVIDENCED),
    _c('X1369-9.6.1-2', '9.6', 'regular emergency drills', 'scheduled restore drills in BackupPolicy', 'BK', Coverage.ENFORCED),
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
    _c('X1369-9.6.6-2', '9.6', 'restore sensitive data quickly after malicious deletion', 'restore path, restore drills, backups immutable to tenants', 'BK', Coverage.ENFORCED),
)
# fmt: on

BY_ID: dict[str, Control] = {control.id: control for control in CONTROLS}


def control(control_id: str) -> Control:
    """The control with this id; KeyError names the unknown id."""
    try:
        return BY_ID[control_id]
    except KeyError:
        raise KeyError(f"unknown X.1369 control id {control_id!r}") from None
