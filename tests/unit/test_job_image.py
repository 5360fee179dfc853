"""Backup, restore and sink pods run the image the chart gives the operator, never the builder's placeholder."""

from __future__ import annotations

from typing import Any

import pytest

from iotsec.k8s.kube import ApiError
from iotsec.model.config import Config
from iotsec.model.platform import Image
from iotsec.services import restore as restore_service


def test_the_operator_takes_its_image_and_pull_policy_from_the_chart():
    config = Config.from_env({"IOTSEC_IMAGE": "reg.local/iotsec:1.2.3", "IOTSEC_IMAGE_PULL_POLICY": "Always"})
    assert config.job_image == Image("reg.local/iotsec:1.2.3", "Always")
    assert Config.from_env({}).job_image == Image(), "out of the chart: the builder's default"


class Cluster:
    def __init__(self, served: dict[str, list[dict[str, Any]]]):
        self.served = served

    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None):
        assert label_selector is not None
        assert label_selector.startswith("iotsec.io/owner-kind=BackupPolicy,iotsec.io/owner-name=tsdb")
        if api_version not in self.served:
            raise ApiError(f"the API server does not serve {kind} in {api_version}", 404)
        if kind == "Job":
            assert label_selector.endswith(",iotsec.io/backup-job=init"), "only the init Job says which image"
        return [o for o in self.served[api_version] if o.get("kind", "CronJob") == kind]


def cron_job(image: str) -> dict[str, Any]:
    container = {"name": "backup", "image": image, "imagePullPolicy": "Always"}
    return {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [container]}}}}}}


def test_a_restore_runs_the_image_that_wrote_the_snapshots():
    cluster = Cluster({"batch/v1beta1": [cron_job("reg.local/iotsec@sha256:" + "a" * 64)]})
    found = restore_service._scheduled_image(cluster, "tsdb", "ns")  # type: ignore[arg-type]
    assert found == Image("reg.local/iotsec@sha256:" + "a" * 64, "Always")


def test_where_no_cronjob_is_served_the_init_job_names_the_image():
    init = {"kind": "Job", "spec": {"template": {"spec": {"containers": [{"image": "reg.local/iotsec:1.2.3"}]}}}}
    found = restore_service._scheduled_image(Cluster({"batch/v1": [init]}), "tsdb", "ns")  # type: ignore[arg-type]
    assert found == Image("reg.local/iotsec:1.2.3", "IfNotPresent")


def test_nothing_scheduled_means_the_image_must_be_named():
    with pytest.raises(restore_service.RestoreError, match="--image"):
        restore_service._scheduled_image(Cluster({"batch/v1": []}), "tsdb", "ns")  # type: ignore[arg-type]
