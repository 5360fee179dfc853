"""Every environment setting of every iotsec process, typed, in one table (pure).

A process reads its environment once, at start (`Config.from_env(os.environ)` in the command that starts it:
`iotsec run`, `iotsec webhook`), and hands the `Config` down; no module reads the environment on import. A bad value
is reported with every other bad value, one line each, naming the variable, what it must be and what it got, and
the process does not start. The README's settings table is generated from `SETTINGS` (a test fails on drift); the
chart sets these variables from its values.

The backup Jobs and audit sinks take no environment settings: the operator writes their configuration (the
backup runner's config.json, the sink's flags) from the custom resources.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotsec.api.durations import parse_duration
from iotsec.model.platform import Image, Platform
from iotsec.model.text import quoted
from iotsec.model.workloads import PodCarrier, parse_workload_kinds

PREFIX = "IOTSEC_"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class ConfigError(ValueError):
    """One or more settings are invalid; `problems` holds one line per bad value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid iotsec settings:\n" + "\n".join(f"  {line}" for line in problems))


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 1-65535, or 0 to disable")
    return value


def _dns_label(text: str) -> str:
    if not _DNS_LABEL.match(text):
        raise ValueError("must be a Kubernetes name (DNS label: lower-case letters, digits, '-')")
    return text


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text.strip()


def _optional_text(text: str) -> str:
    return text.strip()


def _labels(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
        raise ValueError("must be key=value[,key=value]")
    return {key.strip(): value.strip() for key, value in pairs}


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _interval(text: str) -> float:
    """Seconds, or a duration such as 300s or 5m; 0 turns what it paces off."""
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        return parse_duration(stripped).total_seconds()
    if value < 0 or value == float("inf"):
        raise ValueError("must be a duration such as 300s or 5m, or 0 to disable")
    return value


def _pull_policy(text: str) -> str:
    if text not in _PULL_POLICIES:
        raise ValueError(f"must be one of {', '.join(_PULL_POLICIES)}")
    return text


@dataclass(frozen=True)
class Setting:
    """One environment variable: the Config field it fills, how its text is read, and what it is for."""

    field: str
    parse: Callable[[str], Any]
    used_by: str  # the processes that read it
    doc: str

    @property
    def env(self) -> str:
        return PREFIX + self.field.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("resync_seconds", _seconds, "operator", "drift-correction interval of every custom resource"),
    Setting("retry_seconds", _seconds, "operator", "delay before retrying a failed reconcile"),
    Setting("metrics_host", _text, "operator", "address the Prometheus metrics listen on"),
    Setting("metrics_port", _port, "operator", "Prometheus metrics port; 0 disables"),
    Setting("dns_namespace", _dns_label, "operator", "namespace of the cluster DNS pods every zone may reach"),
    Setting("dns_pod_labels", _labels, "operator", "labels of the cluster DNS pods (`key=value[,key=value]`)"),
    Setting(
        "webhook_secret_name",
        _optional_text,
        "operator",
        "Secret the operator keeps the webhook's serving certificate in; empty: another issuer (cert-manager) does",
    ),
    Setting("webhook_namespace", _dns_label, "operator, webhook", "the release namespace: webhook, platform keys"),
    Setting("webhook_service", _dns_label, "operator", "the webhook's Service (names in its certificate)"),
    Setting("webhook_configuration", _text, "operator", "ValidatingWebhookConfiguration the CA bundle goes into"),
    Setting("webhook_extra_dns", _items, "operator", "more DNS names for the webhook certificate (comma-separated)"),
    Setting("webhook_extra_ips", _items, "operator", "IP addresses for the webhook certificate (comma-separated)"),
    Setting("webhook_tls_check_seconds", _seconds, "operator", "how often the webhook certificate is checked"),
    Setting("release", _dns_label, "operator, webhook", "the Helm release: prefix of the chart's ClusterRoles"),
    Setting("operator_service_account", _dns_label, "operator, webhook", "the operator's ServiceAccount"),
    Setting(
        "operator_users",
        _items,
        "operator",
        "usernames whose writes the audit policy records in full; empty: the operator's ServiceAccount",
    ),
    Setting("namespace_grants", _flag, "operator", "bind the operator's namespace role before working in one"),
    Setting(
        "watch_cache",
        _flag,
        "operator",
        "answer the operator's lists of domains, tenants, backup policies, namespaces and NetworkPolicies from watches",
    ),
    Setting("image", _text, "operator", "image of the pods the operator creates (audit sinks, backup CronJobs)"),
    Setting("image_pull_policy", _pull_policy, "operator", "their imagePullPolicy"),
    Setting("audit_namespace", _dns_label, "operator, webhook", "the audit sinks' namespace; empty: <release>-audit"),
    Setting(
        "workload_kinds",
        parse_workload_kinds,
        "webhook",
        "more kinds with pod specs to check, as JSON `[{group, kind, resource, podSpecPaths}]` (the chart's "
        "webhook.workloadKinds)",
    ),
    Setting(
        "scan_interval",
        _interval,
        "operator",
        "how often the background scan re-checks existing objects (seconds or 300s, 5m); 0 turns it off",
    ),
    Setting(
        "excluded_namespaces",
        _items,
        "operator",
        "namespaces the webhook leaves out besides the system and release ones (the chart's "
        "webhook.excludedNamespaces): the background scan leaves them out too",
    ),
)


@dataclass(frozen=True)
class Config:
    """The settings of an iotsec process; defaults are the chart's, for a release named iotsec in iotsec-system."""

    resync_seconds: float = 60.0
    retry_seconds: float = 10.0
    metrics_host: str = "0.0.0.0"  # a pod serves metrics on its own address
    metrics_port: int = 8000
    dns_namespace: str = "kube-system"
    dns_pod_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    webhook_secret_name: str = ""
    webhook_namespace: str = "iotsec-system"
    webhook_service: str = "iotsec-webhook"
    webhook_configuration: str = "iotsec"
    webhook_extra_dns: tuple[str, ...] = ()
    webhook_extra_ips: tuple[str, ...] = ()
    webhook_tls_check_seconds: float = 3600.0
    release: str = "iotsec"
    operator_service_account: str = "iotsec-operator"
    operator_users: tuple[str, ...] = ()
    namespace_grants: bool = True
    watch_cache: bool = True
    image: str = Image().reference
    image_pull_policy: str = Image().pull_policy
    audit_namespace: str = ""  # empty: <release>-audit
    workload_kinds: tuple[PodCarrier, ...] = ()
    scan_interval: float = 300.0
    excluded_namespaces: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """The settings given in `env` (IOTSEC_*; blank means the default); ConfigError lists every bad one."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            text = env.get(setting.env)
            if text is None or not text.strip():
                continue
            try:
                values[setting.field] = setting.parse(text)
            except ValueError as error:
                problems.append(f"{setting.env}={quoted(text)}: {_reason(error)}")
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def with_values(self, **values: Any) -> Config:
        """This Config with the given fields replaced (command-line flags win over the environment); None keeps."""
        return dataclasses.replace(self, **{key: value for key, value in values.items() if value is not None})

    @property
    def audited_operator_users(self) -> list[str]:
        return list(self.operator_users) or [self.platform.operator_user]

    @property
    def job_image(self) -> Image:
        """The image and pull policy of the Jobs and sinks the operator creates (the chart: its own image)."""
        return Image(self.image, self.image_pull_policy)

    @property
    def platform(self) -> Platform:
        """The release namespace (webhook, platform keys), the audit sinks' namespace and the chart's names."""
        return Platform(
            self.webhook_namespace,
            self.release,
            self.operator_service_account,
            self.audit_namespace,
            self.workload_kinds,
        )

    def unknown(self, env: Mapping[str, str]) -> list[str]:
        """IOTSEC_* variables in `env` that are no setting (a typo would otherwise pass silently)."""
        known = {setting.env for setting in SETTINGS}
        return sorted(name for name in env if name.startswith(PREFIX) and name not in known)

    def described(self) -> str:
        """The effective settings in one line, for the start-up log (no setting here is secret)."""
        return " ".join(f"{s.field}={getattr(self, s.field)!r}" for s in SETTINGS)


def _reason(error: ValueError) -> str:
    message = str(error)
    # float()/int() say "could not convert string to float: 'x'"; the setting's own words are clearer
    return "must be a number" if message.startswith(("could not convert", "invalid literal")) else message


def settings_table() -> str:
    """The README's table of settings (between `<!-- settings-table:start -->` and `<!-- settings-table:end -->`)."""
    defaults = Config()
    rows = ["| Variable | Read by | Default | What it sets |", "|---|---|---|---|"]
    for setting in SETTINGS:
        rows.append(
            f"| `{setting.env}` | {setting.used_by} | {_default(getattr(defaults, setting.field))} | {setting.doc} |"
        )
    return "\n".join(rows) + "\n"


def _default(value: Any) -> str:
    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, tuple):
        value = ",".join(str(item) for item in value)
    elif isinstance(value, bool):
        value = "true" if value else "false"
    return f"`{value}`" if value != "" else "(empty)"
