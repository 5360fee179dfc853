"""Everything iotsec produces is valid for every Kubernetes release it supports (1.27 to the newest one
kubernetes-validate knows), not only for the newest: the chart as each release renders it, every object
`iotsec render` plans for the example platform, and the webhook configuration the operator keeps."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from iotsec.build.webhook import client_config, validating_webhook_configuration
from iotsec.cli.main import main
from tests.chart.test_chart import render
from tests.conftest import EXAMPLES

OLDEST_SUPPORTED = (1, 27)  # the chart's kubeVersion
VERSIONS = sorted(
    {v for v in all_versions() if tuple(int(p) for p in v.split(".")[:2]) >= OLDEST_SUPPORTED},
    key=lambda v: tuple(int(p) for p in v.split(".")),
)
NOT_BUILT_IN = ("monitoring.coreos.com/",)  # optional Prometheus operator kinds: their CRDs carry their schemas


def _validate(docs: list[dict[str, Any]], version: str) -> int:
    checked = 0
    for doc in docs:
        if str(doc.get("apiVersion", "")).startswith(NOT_BUILT_IN):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    return checked


def test_the_supported_range_is_covered():
    assert VERSIONS[0].startswith("1.27."), VERSIONS
    assert len(VERSIONS) >= 5


@pytest.mark.parametrize("version", VERSIONS)
def test_the_chart_as_each_release_renders_it(tmp_path, version):
    docs = render(tmp_path, None, "--kube-version", version)
    assert _validate(docs, version) >= 20


@pytest.fixture(scope="module")
def rendered_platform() -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["render", str(EXAMPLES / "platform")]) == 0
    return [d for d in yaml.safe_load_all(out.getvalue()) if d]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_the_operator_plans_for_the_example_platform(rendered_platform, version):
    assert _validate(rendered_platform, version) >= 50


@pytest.mark.parametrize("version", VERSIONS)
def test_the_webhook_configuration_for_each_release(version):
    minor = int(version.split(".")[1])
    configuration = validating_webhook_configuration(
        "iotsec", client_config(service=("iotsec-system", "iotsec-webhook", 443)), "iotsec-system", server_minor=minor
    )
    assert _validate([configuration], version) == 1
