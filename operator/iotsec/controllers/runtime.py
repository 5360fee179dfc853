"""Operator settings and shared state: configuration from the environment, the API adapter, kopf settings."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import kopf
from prometheus_client import start_http_server

from iotsec.build.backup import Image
from iotsec.build.securitydomain import NetworkSettings
from iotsec.k8s.kube import Kube, NamespaceGrants
from iotsec.model.platform import Platform

log = logging.getLogger("iotsec")


def _labels(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"expected key=value[,key=value], got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class Config:
    """Operator configuration; every field has an IOTSEC_* environment variable."""

    resync_seconds: float = 60.0
    retry_seconds: float = 10.0
    metrics_host: str = "0.0.0.0"  # a pod serves metrics on its own address
    metrics_port: int = 8000
    dns_namespace: str = "kube-system"
    dns_pod_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    webhook_secret: str = ""  # empty: the operator does not manage webhook certificates (e.g. cert-manager does)
    webhook_namespace: str = "iotsec-system"
    webhook_service: str = "iotsec-webhook"
    webhook_configuration: str = "iotsec"
    webhook_extra_dns: tuple[str, ...] = ()
    webhook_extra_ips: tuple[str, ...] = ()
    webhook_tls_check_seconds: float = 3600.0
    release: str = "iotsec"  # the Helm release name: prefix of the ClusterRoles the chart ships
    operator_service_account: str = "iotsec-operator"
    namespace_grants: bool = True  # bind the chart's namespace role in each namespace before working there
    image: str = Image().reference  # the image every iotsec pod runs: the sinks, backup and restore Jobs
    image_pull_policy: str = Image().pull_policy
    audit_namespace: str = "iotsec-audit"  # the audit sinks' own namespace (default <release>-audit)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)
        defaults = cls()
        resync = float(env.get("IOTSEC_RESYNC_SECONDS", defaults.resync_seconds))
        if resync <= 0:
            raise ValueError(f"IOTSEC_RESYNC_SECONDS must be positive, got {resync}")
        return cls(
            resync_seconds=resync,
            retry_seconds=float(env.get("IOTSEC_RETRY_SECONDS", defaults.retry_seconds)),
            metrics_host=env.get("IOTSEC_METRICS_HOST", defaults.metrics_host),
            metrics_port=int(env.get("IOTSEC_METRICS_PORT", defaults.metrics_port)),
            dns_namespace=env.get("IOTSEC_DNS_NAMESPACE", defaults.dns_namespace),
            dns_pod_labels=_labels(env.get("IOTSEC_DNS_POD_LABELS", "")) or defaults.dns_pod_labels,
            webhook_secret=env.get("IOTSEC_WEBHOOK_SECRET_NAME", defaults.webhook_secret),
            webhook_namespace=env.get("IOTSEC_WEBHOOK_NAMESPACE", defaults.webhook_namespace),
            webhook_service=env.get("IOTSEC_WEBHOOK_SERVICE", defaults.webhook_service),
            webhook_configuration=env.get("IOTSEC_WEBHOOK_CONFIGURATION", defaults.webhook_configuration),
            webhook_extra_dns=_items(env.get("IOTSEC_WEBHOOK_EXTRA_DNS", "")),
            webhook_extra_ips=_items(env.get("IOTSEC_WEBHOOK_EXTRA_IPS", "")),
            webhook_tls_check_seconds=float(
                env.get("IOTSEC_WEBHOOK_TLS_CHECK_SECONDS", defaults.webhook_tls_check_seconds)
            ),
            release=env.get("IOTSEC_RELEASE", defaults.release),
            operator_service_account=env.get("IOTSEC_OPERATOR_SERVICE_ACCOUNT", defaults.operator_service_account),
            namespace_grants=env.get("IOTSEC_NAMESPACE_GRANTS", "1") not in ("0", "false", "no"),
            image=env.get("IOTSEC_IMAGE") or defaults.image,
            image_pull_policy=env.get("IOTSEC_IMAGE_PULL_POLICY") or defaults.image_pull_policy,
            audit_namespace=env.get("IOTSEC_AUDIT_NAMESPACE") or f"{env.get('IOTSEC_RELEASE', defaults.release)}-audit",
        )

    @property
    def job_image(self) -> Image:
        """The image and pull policy of the Jobs and sinks the operator creates (the chart: its own image)."""
        return Image(self.image, self.image_pull_policy)

    @property
    def platform(self) -> Platform:
        """The release namespace (webhook, platform keys), the audit sinks' namespace and the chart's names."""
        return Platform(self.webhook_namespace, self.release, self.operator_service_account, self.audit_namespace)

    @property
    def network(self) -> NetworkSettings:
        return NetworkSettings(  # domains never take a namespace the fence reserves
            dns_namespace=self.dns_namespace,
            dns_pod_labels=self.dns_pod_labels,
            reserved_namespaces=self.platform.reserved_namespaces,
        )


CONFIG = Config.from_env()


@cache
def kube() -> Kube:
    """The process's API adapter (created on first use, after kopf has started)."""
    return Kube(grants=NamespaceGrants(CONFIG.platform) if CONFIG.namespace_grants else None)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "iotsec.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="iotsec.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="iotsec.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 15
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60)
    # a deleted object keeps its finalizer until its resync timer has stopped: look every second, not minute
    settings.background.cancellation_polling = 1.0
    if CONFIG.metrics_port:
        start_http_server(CONFIG.metrics_port, CONFIG.metrics_host)
        log.info("metrics on http://%s:%d/metrics", CONFIG.metrics_host, CONFIG.metrics_port)


@kopf.on.probe(id="apiserver")
def api_reachable(**_: Any) -> bool:
    """Liveness detail: the API adapter can reach the API server."""
    kube().list("v1", "Namespace", label_selector="iotsec.io/liveness-probe=none")
    return True
