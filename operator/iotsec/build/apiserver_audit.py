"""AuditPolicy → the API server's audit Policy, the ConfigMap that carries it, the kube-apiserver flags and the
kubeconfig the API server uses to reach iotsec's sink (X1369-9.6.4-1, X1369-9.3.1-1, X1369-9.5.1-2, X1369-9.6.4-6).

Pure: no API calls. The API server applies the *first* rule that matches a request, and records nothing when no
rule matches, so the order of the rendered rules is the policy:

1. the canary (optional): Request for the one canary ConfigMap, so the sink can read the nonce the operator wrote
   from the request body and prove the pipeline delivers (a *create* carries no name in the request attributes:
   the canary is written by update or patch);
2. protective rules: Metadata for Secrets, ServiceAccount tokens, authentication.k8s.io (TokenReviews carry the
   token), authorization.k8s.io reviews and every ConfigMap (the policy cannot see content; a ConfigMap may hold key
   material). They sit before the user's rules and restrict neither users nor verbs, so no user rule can raise a
   Secret to Request or RequestResponse, nor silence it: every Secret access is recorded, without its body;
3. the AuditPolicy's own `rules`, in order;
4. iotsec's baseline: RequestResponse for interactive access (exec, attach, port-forward, proxy, ephemeral
   containers; whatever the verb, as a websocket exec is a GET), None for the noisy *reads* of system components and
   health/metrics endpoints (never a write), RequestResponse for the operator's own writes and for writes to RBAC,
   iotsec.io, admission configuration, CRDs, APIServices and CSRs, Request for every other write, and a Metadata
   catch-all for everything else (reads, discovery, and authentication failures, which reach the policy without a
   user).

`level_for` evaluates a rendered policy the way the API server's checker does (`iotsec audit policy --explain`);
`secret_exposure` proves the first rule reached by any Secret, token or TokenReview request records metadata only;
`policy_errors` repeats the API server's validation of the policy file: an invalid file stops kube-apiserver from
starting, so `render_policy` refuses to produce one.

Installing it
-------------

Self-managed control planes (kubeadm and alike), on every control-plane node:

* write the ConfigMap's `policy.yaml` to `/etc/kubernetes/audit/policy.yaml` and `webhook_kubeconfig(...)` (as
  YAML) to `/etc/kubernetes/audit/webhook-kubeconfig.yaml`, mode 0600, owned by root;
* add `apiserver_flags(policy_path=..., webhook_config_path=...)` to the `command` of the kube-apiserver static pod
  (`/etc/kubernetes/manifests/kube-apiserver.yaml`), plus a `hostPath` volume for `/etc/kubernetes/audit`
  (type Directory) mounted read-only at the same path. kube-apiserver reads the policy only when it starts, and
  the kubelet restarts it only when the manifest's content changes: after updating the policy, change the pod's
  `iotsec.io/audit-policy-sha256` annotation to the ConfigMap's;
* put the same flags and the volume in kubeadm's `ClusterConfiguration` (`apiServer.extraArgs`,
  `apiServer.extraVolumes`), or `kubeadm upgrade` rewrites the manifest without them.

Managed control planes (EKS, GKE, AKS) do not let you set kube-apiserver flags: this policy and the webhook are not
used there, the provider's own audit policy decides what is recorded, and iotsec cannot change it. Turn on the
provider's audit logs (EKS control-plane logging `audit` to CloudWatch Logs; GKE Cloud Audit Logs with Data Access
logs enabled for the Kubernetes Engine API; AKS diagnostic settings `kube-audit` to an Event Hub or storage) and run
a log forwarder that posts them to the sink as `audit.k8s.io/v1` EventList batches over the same TLS connection
(GKE's entries are Cloud Audit Log entries, not Kubernetes Events, and have to be converted). The provider's log is
the record there; the sink's chain only covers what the forwarder delivered.

In batch mode the API server drops events when its buffer is full rather than slow requests down; the canary and
the sink's refusal counters are how such a loss becomes visible.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from iotsec.api.auditpolicy import AuditPolicySpec, AuditRule
from iotsec.model.labels import AUDIT_POLICY_DIGEST, owned_metadata

KIND = "AuditPolicy"
API_VERSION = "audit.k8s.io/v1"
POLICY_KEY = "policy.yaml"
NAME_MAX = 253

C_ADMIN_ACTIVITY = "X1369-9.6.4-1"
C_SYSTEM_LOG = "X1369-9.3.1-1"
C_OPERATION_LOG = "X1369-9.5.1-2"
C_SINK_TLS = "X1369-9.6.4-6"
CONTROLS = (C_ADMIN_ACTIVITY, C_SYSTEM_LOG, C_OPERATION_LOG, C_SINK_TLS)

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
BODY_LEVELS = frozenset({"Request", "RequestResponse"})
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
POLICY_KEYS = frozenset({"apiVersion", "kind", "metadata", "rules", "omitStages"})
RULE_KEYS = frozenset(
    {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs", "omitStages"}
)
GROUP_RESOURCE_KEYS = frozenset({"group", "resources", "resourceNames"})

SECRET_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("", "secrets", ""),
    ("", "serviceaccounts", "token"),
    ("authentication.k8s.io", "tokenreviews", ""),
)
"""(group, resource, subresource) whose requests or responses carry secrets: never recorded with a body."""

SYSTEM_COMPONENTS = ("system:kube-controller-manager", "system:kube-scheduler", "system:kube-proxy", "system:apiserver")
QUIET_READERS = ("system:nodes", "system:serviceaccounts:kube-system")
QUIET_URLS = ("/healthz*", "/livez*", "/readyz*", "/version", "/metrics", "/openapi*")

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")

PROTECTIVE_RULES: tuple[dict[str, Any], ...] = (
    {
        "level": "Metadata",
        "resources": [
            {"group": "", "resources": ["secrets", "serviceaccounts/token"]},
            {"group": "authentication.k8s.io"},
        ],
    },
    {"level": "Metadata", "resources": [{"group": "", "resources": ["configmaps"]}]},
    {"level": "Metadata", "resources": [{"group": "authorization.k8s.io"}]},
)

INTERACTIVE_RULE: dict[str, Any] = {
    "level": "RequestResponse",
    "resources": [
        {
            "group": "",
            "resources": [
                "pods/exec",
                "pods/attach",
                "pods/portforward",
                "pods/proxy",
                "pods/ephemeralcontainers",
                "services/proxy",
                "nodes/proxy",
            ],
        }
    ],
}

QUIET_RULES: tuple[dict[str, Any], ...] = (
    {
        "level": "None",
        "users": ["system:kube-proxy"],
        "verbs": ["watch"],
        "resources": [
            {"group": "", "resources": ["endpoints", "services", "services/status", "nodes"]},
            {"group": "discovery.k8s.io", "resources": ["endpointslices"]},
        ],
    },
    {"level": "None", "userGroups": list(QUIET_READERS), "verbs": list(READ_VERBS)},
    {
        "level": "None",
        "users": list(SYSTEM_COMPONENTS),
        "verbs": list(READ_VERBS),
        "resources": [
            {"group": "", "resources": ["endpoints", "events"]},
            {"group": "coordination.k8s.io", "resources": ["leases"]},
            {"group": "events.k8s.io", "resources": ["events"]},
            {"group": "discovery.k8s.io", "resources": ["endpointslices"]},
        ],
    },
    {"level": "None", "verbs": ["get"], "nonResourceURLs": list(QUIET_URLS)},
)

PRIVILEGED_WRITES: dict[str, Any] = {
    "level": "RequestResponse",
    "verbs": list(WRITE_VERBS),
    "resources": [
        {"group": "rbac.authorization.k8s.io"},
        {"group": "iotsec.io"},
        {"group": "admissionregistration.k8s.io"},
        {"group": "apiextensions.k8s.io"},
        {"group": "apiregistration.k8s.io"},
        {"group": "certificates.k8s.io", "resources": ["certificatesigningrequests/*"]},
    ],
}


# --- rendering -------------------------------------------------------------------------------------------------


def render_policy(
    spec: AuditPolicySpec,
    *,
    operator_users: Sequence[str] = (),
    canary: tuple[str, str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The `audit.k8s.io/v1` Policy for one AuditPolicy. `operator_users`: the usernames the operator acts as
    (`system:serviceaccount:<ns>:<sa>`); `canary`: (namespace, ConfigMap name) of the pipeline canary.

    Raises ValueError when the user's rules would make a file kube-apiserver refuses to start with."""
    rules: list[dict[str, Any]] = []
    if canary is not None:
        rules.append(_canary_rule(*canary))
    rules += _copy(PROTECTIVE_RULES)
    rules += [_user_rule(rule) for rule in spec.rules or ()]
    rules.append(_copy(INTERACTIVE_RULE))
    rules += _copy(QUIET_RULES)
    users = sorted({u for u in operator_users if u})
    if users:
        rules.append({"level": "RequestResponse", "users": users, "verbs": list(WRITE_VERBS)})
    rules.append(_copy(PRIVILEGED_WRITES))
    rules.append({"level": "Request", "verbs": list(WRITE_VERBS)})
    rules.append({"level": "Metadata"})

    policy: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Policy"}
    if name:
        policy["metadata"] = {"name": name}
    policy["omitStages"] = list(dict.fromkeys(spec.omit_stages))
    policy["rules"] = rules
    errors = policy_errors(policy)
    if errors:
        raise ValueError("the audit policy would not load in kube-apiserver: " + "; ".join(errors))
    return policy


def _canary_rule(namespace: str, name: str) -> dict[str, Any]:
    if not namespace or not name:
        raise ValueError("the canary needs a namespace and a ConfigMap name")
    return {
        "level": "Request",
        "namespaces": [namespace],
        "resources": [{"group": "", "resources": ["configmaps"], "resourceNames": [name]}],
    }


def _user_rule(rule: AuditRule) -> dict[str, Any]:
    """An AuditRule in the Policy's spelling. A verb "*" is no wildcard to the API server (it would match nothing):
    a list holding it is left out, which is what "every verb" means there."""
    out: dict[str, Any] = {"level": rule.level}
    verbs = None if rule.verbs and "*" in rule.verbs else rule.verbs
    for key, value in (
        ("users", rule.users),
        ("userGroups", rule.user_groups),
        ("verbs", verbs),
        ("namespaces", rule.namespaces),
        ("nonResourceURLs", rule.non_resource_urls),
        ("omitStages", rule.omit_stages),
    ):
        if value:
            out[key] = list(value)
    resources = []
    for gr in rule.resources or ():
        entry: dict[str, Any] = {"group": gr.group}
        if gr.resources:
            entry["resources"] = list(gr.resources)
        if gr.resource_names:
            entry["resourceNames"] = list(gr.resource_names)
        resources.append(entry)
    if resources:
        out["resources"] = resources
    return out


def _copy(value: Any) -> Any:
    """A deep copy of the rule tables, so a caller editing one rendered policy cannot change the next."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def policy_configmap(
    name: str,
    spec: AuditPolicySpec,
    *,
    namespace: str,
    operator_users: Sequence[str] = (),
    canary: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The ConfigMap holding the rendered Policy under `policy.yaml`, with the text's SHA-256 as an annotation so
    whatever installs it on the control-plane nodes can tell whether the file there is current."""
    object_name = policy_configmap_name(name)
    text = yaml.safe_dump(
        render_policy(spec, operator_users=operator_users, canary=canary, name=object_name), sort_keys=False
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owned_metadata(
            object_name,
            namespace,
            owner_kind=KIND,
            owner_name=name,
            controls=CONTROLS,
            annotations={AUDIT_POLICY_DIGEST: hashlib.sha256(text.encode()).hexdigest()},
        ),
        "data": {POLICY_KEY: text},
    }


def policy_configmap_name(name: str) -> str:
    full = f"iotsec-audit-policy-{name}"
    if len(full) <= NAME_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: NAME_MAX - len(digest) - 1].rstrip('-.')}-{digest}"


# --- wiring the API server to the sink -------------------------------------------------------------------------


def apiserver_flags(
    *,
    policy_path: str,
    webhook_config_path: str,
    batch_buffer_size: int = 10000,
    initial_backoff: str = "10s",
) -> list[str]:
    """kube-apiserver flags (all present since 1.20) sending every event in batches to the sink; oversized
    events are truncated to their metadata instead of being dropped."""
    for flag, path in (("policy_path", policy_path), ("webhook_config_path", webhook_config_path)):
        if not path.startswith("/"):
            raise ValueError(f"{flag} must be an absolute path inside the kube-apiserver container, got {path!r}")
    if batch_buffer_size < 1:
        raise ValueError(f"batch_buffer_size must be at least 1, got {batch_buffer_size}")
    if not _GO_DURATION.match(initial_backoff):
        raise ValueError(f"initial_backoff must be a Go duration such as 10s, got {initial_backoff!r}")
    return [
        f"--audit-policy-file={policy_path}",
        f"--audit-webhook-config-file={webhook_config_path}",
        "--audit-webhook-mode=batch",
        f"--audit-webhook-batch-buffer-size={batch_buffer_size}",
        "--audit-webhook-batch-max-size=400",
        "--audit-webhook-batch-max-wait=5s",
        f"--audit-webhook-initial-backoff={initial_backoff}",
        "--audit-webhook-truncate-enabled=true",
        f"--audit-webhook-version={API_VERSION}",
    ]


def webhook_kubeconfig(
    *,
    server: str,
    ca_pem: bytes,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """The kubeconfig kube-apiserver reads from --audit-webhook-config-file: the sink's https URL, the CA that
    signed its serving certificate, and exactly one way to authenticate (client certificate and key, or a token)."""
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"the audit sink must be reached over TLS: server must be an https:// URL, got {server!r}")
    if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise ValueError("ca_pem must hold the PEM certificate of the CA that signed the sink's serving certificate")
    has_cert = client_cert_pem is not None or client_key_pem is not None
    if has_cert and token is not None:
        raise ValueError("give one way to authenticate to the sink: a client certificate and key, or a token; not both")
    user: dict[str, str]
    if has_cert:
        if not client_cert_pem or not client_key_pem:
            raise ValueError("a client certificate needs both client_cert_pem and client_key_pem")
        if b"-----BEGIN CERTIFICATE-----" not in client_cert_pem or b"PRIVATE KEY-----" not in client_key_pem:
            raise ValueError("client_cert_pem and client_key_pem must be a PEM certificate and a PEM private key")
        user = {"client-certificate-data": _b64(client_cert_pem), "client-key-data": _b64(client_key_pem)}
    elif token is not None:
        if not token or any(c.isspace() for c in token):
            raise ValueError("the bearer token must be non-empty and contain no whitespace")
        user = {"token": token}
    else:
        raise ValueError("give one way to authenticate to the sink: a client certificate and key, or a token")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "iotsec-audit-sink", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [{"name": "kube-apiserver", "user": user}],
        "contexts": [{"name": "iotsec-audit", "context": {"cluster": "iotsec-audit-sink", "user": "kube-apiserver"}}],
        "current-context": "iotsec-audit",
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- evaluating a rendered policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attributes:
    user: str | None
    groups: tuple[str, ...]
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    path: str | None  # set for non-resource requests

    @property
    def is_resource_request(self) -> bool:
        return self.path is None


def matching_rule(
    policy: Mapping[str, Any],
    *,
    user: str | None,
    groups: Sequence[str] = (),
    verb: str,
    group: str = "",
    resource: str = "",
    subresource: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
    non_resource_url: str | None = None,
) -> int | None:
    """The index of the rule the API server applies to this request, None when no rule matches. `user` None: an
    unauthenticated request; `non_resource_url`: a path such as /healthz (then group and resource stay empty)."""
    if non_resource_url is None and not resource:
        raise ValueError("name the resource, or the non_resource_url of a non-resource request")
    if non_resource_url is not None and resource:
        raise ValueError("a request is either for a resource or for a non-resource URL")
    attrs = _Attributes(
        user=user,
        groups=tuple(groups),
        verb=verb,
        group=group,
        resource=resource,
        subresource=subresource or "",
        namespace=namespace or "",
        name=name or "",
        path=non_resource_url,
    )
    for index, rule in enumerate(policy.get("rules") or ()):
        if _rule_matches(rule, attrs):
            return index
    return None


def level_for(
    policy: Mapping[str, Any],
    *,
    user: str | None,
    groups: Sequence[str] = (),
    verb: str,
    group: str = "",
    resource: str = "",
    subresource: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
    non_resource_url: str | None = None,
) -> str:
    """The level the API server records this request at ("None" when no rule matches, as there)."""
    index = matching_rule(
        policy,
        user=user,
        groups=groups,
        verb=verb,
        group=group,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        non_resource_url=non_resource_url,
    )
    return "None" if index is None else policy["rules"][index]["level"]


def _rule_matches(rule: Mapping[str, Any], attrs: _Attributes) -> bool:
    """k8s.io/apiserver/pkg/audit/policy/checker.go ruleMatches: empty lists match everything."""
    if rule.get("users") and (attrs.user is None or attrs.user not in rule["users"]):
        return False
    if rule.get("userGroups") and (attrs.user is None or not set(attrs.groups) & set(rule["userGroups"])):
        return False
    if rule.get("verbs") and attrs.verb not in rule["verbs"]:
        return False
    if rule.get("namespaces") or rule.get("resources"):
        return _resources_match(rule, attrs)
    if rule.get("nonResourceURLs"):
        return not attrs.is_resource_request and any(_path_matches(attrs.path, s) for s in rule["nonResourceURLs"])
    return True


def _resources_match(rule: Mapping[str, Any], attrs: _Attributes) -> bool:
    if not attrs.is_resource_request:
        return False
    if rule.get("namespaces") and attrs.namespace not in rule["namespaces"]:  # cluster-scoped: ""
        return False
    if not rule.get("resources"):
        return True
    for entry in rule["resources"]:
        if entry.get("group", "") != attrs.group:
            continue
        if not entry.get("resources"):
            return True
        if entry.get("resourceNames") and attrs.name not in entry["resourceNames"]:
            continue
        if any(_resource_matches(spec, attrs.resource, attrs.subresource) for spec in entry["resources"]):
            return True
    return False


def _resource_matches(spec: str, resource: str, subresource: str) -> bool:
    """ "pods" matches pods only, "pods/exec" that subresource, "*" anything, "*/scale" that subresource of any
    resource, "pods/*" pods and all its subresources."""
    combined = f"{resource}/{subresource}" if subresource else resource
    if spec in (combined, "*"):
        return True
    if subresource and spec.startswith("*/") and spec[2:] == subresource:
        return True
    return spec.endswith("/*") and spec[:-2] == resource


def _path_matches(path: str | None, spec: str) -> bool:
    if path is None:
        return False
    if spec in ("*", path):
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


# --- checks -------------------------------------------------------------------------------------------------------


def secret_exposure(policy: Mapping[str, Any]) -> list[str]:
    """Rules that could record the body of a Secret, ServiceAccount token or TokenReview request (level Request or
    RequestResponse) because no earlier None/Metadata rule takes every such request. Empty: the policy is safe.

    A rule "could match" when its resources (or lack of them) allow the target whatever the user, verb, namespace
    and object name; a None/Metadata rule "takes every request" only when it restricts none of these."""
    findings = []
    for group, resource, subresource in SECRET_TARGETS:
        target = f"{group or 'core'}/{resource}{'/' + subresource if subresource else ''}"
        for index, rule in enumerate(policy.get("rules") or ()):
            could, always = _covers(rule, group, resource, subresource)
            if not could:
                continue
            if rule.get("level") in BODY_LEVELS:
                findings.append(f"rules[{index}] records {target} requests at {rule['level']}")
            if always:
                break
    return findings


def _covers(rule: Mapping[str, Any], group: str, resource: str, subresource: str) -> tuple[bool, bool]:
    """(the rule could match some request for the target, it matches every request for it)."""
    unrestricted = not (rule.get("users") or rule.get("userGroups") or rule.get("verbs") or rule.get("namespaces"))
    if not (rule.get("resources") or rule.get("namespaces")):
        if rule.get("nonResourceURLs"):
            return False, False
        return True, unrestricted
    if not rule.get("resources"):
        return True, unrestricted
    could = always = False
    for entry in rule["resources"]:
        if entry.get("group", "") != group:
            continue
        if not entry.get("resources"):
            could, always = True, always or unrestricted
        elif any(_resource_matches(spec, resource, subresource) for spec in entry["resources"]):
            could = True
            always = always or (unrestricted and not entry.get("resourceNames"))
    return could, always


def policy_errors(policy: Mapping[str, Any]) -> list[str]:
    """What kube-apiserver's validation of the policy file (k8s.io/apiserver/pkg/apis/audit/validation) and its
    strict decoding would reject; kube-apiserver does not start with such a file."""
    errors = []
    if policy.get("apiVersion") != API_VERSION or policy.get("kind") != "Policy":
        errors.append(f"apiVersion/kind must be {API_VERSION}/Policy")
    errors += [f"unknown field {key!r}" for key in sorted(set(policy) - POLICY_KEYS)]
    errors += _stage_errors(policy.get("omitStages"), "omitStages")
    rules = policy.get("rules")
    if not isinstance(rules, list) or not rules:
        return [*errors, "rules must be a non-empty list"]
    for index, rule in enumerate(rules):
        errors += _rule_errors(rule, f"rules[{index}]")
    return errors


def _rule_errors(rule: Any, where: str) -> list[str]:
    if not isinstance(rule, Mapping):
        return [f"{where} must be a mapping"]
    errors = [f"{where}: unknown field {key!r}" for key in sorted(set(rule) - RULE_KEYS)]
    if rule.get("level") not in LEVELS:
        errors.append(f"{where}.level must be one of {', '.join(LEVELS)}")
    for key in ("users", "userGroups", "verbs", "namespaces", "nonResourceURLs"):
        value = rule.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            errors.append(f"{where}.{key} must be a list of non-empty strings")
    for url in rule.get("nonResourceURLs") or ():
        if url != "*" and (not str(url).startswith("/") or "*" in str(url)[:-1]):
            errors.append(f"{where}.nonResourceURLs: {url!r} must begin with '/' and may end with '*' only")
    if rule.get("nonResourceURLs") and (rule.get("resources") or rule.get("namespaces")):
        errors.append(f"{where}: rules cannot apply to both regular resources and non-resource URLs")
    for position, entry in enumerate(rule.get("resources") or ()):
        at = f"{where}.resources[{position}]"
        if not isinstance(entry, Mapping):
            errors.append(f"{at} must be a mapping")
            continue
        errors += [f"{at}: unknown field {key!r}" for key in sorted(set(entry) - GROUP_RESOURCE_KEYS)]
        group = entry.get("group", "")
        if group and not (isinstance(group, str) and len(group) <= NAME_MAX and _DNS_SUBDOMAIN.match(group)):
            errors.append(f"{at}.group {group!r} must be a lower-case DNS subdomain (no version)")
        if entry.get("resourceNames") and not entry.get("resources"):
            errors.append(f"{at}: using resourceNames requires at least one resource")
    errors += _stage_errors(rule.get("omitStages"), f"{where}.omitStages")
    return errors


def _stage_errors(stages: Any, where: str) -> list[str]:
    if stages is None:
        return []
    if not isinstance(stages, list):
        return [f"{where} must be a list"]
    return [f"{where}: unknown stage {stage!r}" for stage in stages if stage not in STAGES]
