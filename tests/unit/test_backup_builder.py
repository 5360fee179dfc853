"""The BackupPolicy builder: password Secret, runner configuration, backup/verify/drill CronJobs."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import kubernetes_validate
import pytest

from iotsec.admission.context import Context, DomainPolicy
from iotsec.admission.engine import decide
from iotsec.api.backuppolicy import BackupPolicySpec
from iotsec.build.backup import PLACEHOLDER, plan_backup, restore_job, runner_config
from tests.conftest import load_examples

POLICIES = {d["metadata"]["name"]: d for d in load_examples() if d["kind"] == "BackupPolicy"}


def spec(name: str = "timeseries", **changes) -> BackupPolicySpec:
    body = copy.deepcopy(POLICIES[name]["spec"])
    body.update(changes)
    return BackupPolicySpec.model_validate(body)


def plan(**changes):
    return plan_backup("timeseries", "iot-processing", spec(**changes), ["tsdb-0", "tsdb-1"])


def cron(p, job: str) -> dict:
    return next(o for o in p.objects if o["kind"] == "CronJob" and o["metadata"]["name"] == f"iotsec-{job}-timeseries")


def test_every_object_is_valid_kubernetes():
    version = kubernetes_validate.latest_version()
    for obj in plan().objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_backup_verify_and_drill_jobs(tmp_path):
    p = plan()
    assert {o["metadata"]["name"] for o in p.objects if o["kind"] == "CronJob"} == {
        "iotsec-backup-timeseries",
        "iotsec-verify-timeseries",
        "iotsec-drill-timeseries",
    }
    backup = cron(p, "backup")["spec"]
    assert backup["schedule"] == "0 2 * * *"
    assert backup["timeZone"] == "Europe/Berlin"
    assert backup["concurrencyPolicy"] == "Forbid"
    assert backup["suspend"] is False
    assert cron(p, "verify")["spec"]["schedule"] == "30 4 * * 0"
    assert cron(p, "drill")["spec"]["schedule"] == "0 6 1 * *"


def test_claims_are_mounted_read_only_and_the_password_comes_from_the_secret():
    pod = cron(plan(), "backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert [c["persistentVolumeClaim"] for c in claims] == [
        {"claimName": "tsdb-0", "readOnly": True},
        {"claimName": "tsdb-1", "readOnly": True},
    ]
    container = pod["containers"][0]
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["mountPath"].startswith("/data/"))
    password = next(e for e in container["env"] if e["name"] == "RESTIC_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "iotsec-backup-timeseries-password", "key": "password"}
    assert {"secretRef": {"name": "backup-s3-credentials"}} in container["envFrom"]
    assert container["args"][:2] == ["backup", "run"]
    assert container["terminationMessagePolicy"] == "File"


@pytest.mark.parametrize("job", ["backup", "verify", "drill"])
def test_jobs_pass_iotsecs_own_admission(job):
    cron_job = cron(plan(), job)
    decision = decide(cron_job, Context(DomainPolicy("support", "support"), datetime.now(UTC)))
    assert [v.line() for v in decision.violations] == []


def test_suspend_and_a_brought_password():
    p = plan(suspend=True, encryption={"passwordSecretRef": {"name": "vault-restic", "key": "pw"}})
    assert all(o["spec"]["suspend"] for o in p.objects if o["kind"] == "CronJob")
    assert not any(o["kind"] == "Secret" for o in p.objects), "no generated password when one is brought"
    env = cron(p, "backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "vault-restic", "key": "pw"}


def test_generated_password_is_only_a_placeholder_offline():
    (secret,) = [o for o in plan().objects if o["kind"] == "Secret"]
    assert secret["stringData"] == {"password": PLACEHOLDER}
    assert "ownerReferences" not in secret["metadata"]


def test_runner_configuration():
    config = runner_config("timeseries", "iot-processing", spec(), ["tsdb-1", "tsdb-0", "tsdb-0"])
    assert config["paths"] == ["/data/tsdb-0", "/data/tsdb-1"]
    assert config["snapshot_tags"] == ["pvc=tsdb-0", "pvc=tsdb-1"]
    assert config["host"] == "timeseries"
    assert config["targets"] == [
        {
            "name": "primary",
            "repository": "s3:s3.eu-central-1.amazonaws.com/example-iot-backups/timeseries",
            "role": "primary",
        },
        {"name": "offsite", "repository": "b2:example-iot-offsite:timeseries", "role": "offsite"},
    ]
    assert config["retention"]["keep_daily"] == 14
    assert config["read_data_subset"] == "10%"
    ((configmap),) = [o for o in plan().objects if o["kind"] == "ConfigMap"]
    assert json.loads(configmap["data"]["config.json"])["tags"] == ["policy=timeseries", "namespace=iot-processing"]


def test_disabled_verification_and_drill_create_no_jobs():
    p = plan(verification={"enabled": False}, restoreDrill={"enabled": False})
    assert [o["metadata"]["name"] for o in p.objects if o["kind"] == "CronJob"] == ["iotsec-backup-timeseries"]


def test_restore_job_writes_into_its_claim_and_is_valid():
    from iotsec.build.backup import restore_claim, restore_job

    job = restore_job(
        "timeseries", "iot-processing", spec(), "tsdb-restore", "4f2a9c", "iotsec-restore-x", source_claim="tsdb-0"
    )
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    pod = job["spec"]["template"]["spec"]
    assert {"name": "target", "persistentVolumeClaim": {"claimName": "tsdb-restore"}} in pod["volumes"]
    args = pod["containers"][0]["args"]
    assert args[:2] == ["backup", "restore"]
    assert args[args.index("--snapshot") + 1] == "4f2a9c"
    # The claim sits where the snapshot has tsdb-0's files, under the destination: they land at its root.
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    destination, include = args[args.index("--destination") + 1], args[args.index("--include") + 1]
    assert include == "/data/tsdb-0"
    assert mounts["target"] == destination + include
    assert mounts["restore-root"] == destination
    same = restore_job("timeseries", "iot-processing", spec(), "tsdb-0", "latest", "iotsec-restore-y")
    assert same["spec"]["template"]["spec"]["containers"][0]["args"][-3] == "/data/tsdb-0"
    assert not any(
        "persistentVolumeClaim" in v and v["persistentVolumeClaim"].get("readOnly") is False
        for v in pod["volumes"]
        if v["name"] != "target"
    )
    claim = restore_claim("tsdb-restore", "iot-processing", "20Gi", "encrypted-ssd")
    kubernetes_validate.validate(claim, kubernetes_validate.latest_version(), strict=True)
    assert claim["spec"]["storageClassName"] == "encrypted-ssd"


@pytest.mark.parametrize(
    ("repository", "port"),
    [
        ("s3:https://s3.example.com/bucket/x", 443),
        ("s3:http://minio.storage.svc:9000/bucket", 9000),
        ("s3:s3.amazonaws.com/bucket", 443),
        ("b2:bucket:path", 443),
        ("rest:http://restic-server:8000/", 8000),
        ("sftp:backup@host.example.com:/srv/restic", 22),
        ("sftp://backup@host.example.com:2222//srv/restic", 2222),
        ("/mnt/backups", None),
        ("local:/mnt/backups", None),
    ],
)
def test_each_repository_is_reached_on_its_own_port(repository, port):
    from iotsec.build.backup import repository_port

    assert repository_port(repository) == port


def test_the_jobs_get_egress_to_dns_and_their_repositories_only():
    """Issue 14: under a SecurityDomain's default deny the backup pods reached neither DNS nor their repositories."""
    p = plan()
    (policy,) = [o for o in p.objects if o["kind"] == "NetworkPolicy"]
    kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)
    assert policy["spec"]["policyTypes"] == ["Egress"], "nothing opened towards the pods"
    dns, repositories = policy["spec"]["egress"]
    assert {(x["protocol"], x["port"]) for x in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert {x["port"] for x in repositories["ports"]} == {443}, "the example's S3 and B2 targets"
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for job in ("backup", "verify", "drill"):
        labels = cron(p, job)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"the {job} pods are the ones it opens for"


# -- sftp targets (issue 14): the Secret's key and known_hosts as read-only files, never as environment ----------


def sftp_plan():
    p = spec("audit-store")
    return plan_backup("audit-store", "iotsec-system", p, ["audit-0"]), p


def pods(p) -> list[dict]:
    return [o["spec"]["jobTemplate"]["spec"]["template"]["spec"] for o in p.objects if o["kind"] == "CronJob"]


def test_an_sftp_targets_secret_is_mounted_read_only_with_mode_0400_and_never_in_the_environment():
    p, s = sftp_plan()
    sftp = next(t for t in s.targets if t.repository.startswith("sftp:"))
    restore = restore_job("audit-store", "iotsec-system", s, "audit-0-restored", "latest", "restore-1")
    for pod in [*pods(p), restore["spec"]["template"]["spec"]]:
        (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == sftp.credentials_secret]
        assert volume["secret"]["defaultMode"] == 0o400
        assert "items" not in volume["secret"], "a Secret lacking a key still mounts: the runner names what is missing"
        assert pod["securityContext"]["fsGroup"] == 10001, "the kubelet gives the files the group of UID 10001"
        container = pod["containers"][0]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount == {"name": volume["name"], "mountPath": f"/etc/iotsec/sftp/{sftp.name}", "readOnly": True}
        from_secrets = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
        assert sftp.credentials_secret not in from_secrets, "the private key never becomes an environment variable"
        assert "backup-s3-credentials" in from_secrets, "other targets keep their environment"
        assert not [e for e in container["env"] if sftp.credentials_secret in json.dumps(e)]


def test_the_runner_config_names_the_key_and_known_hosts_files_of_sftp_targets_only():
    config = runner_config("audit-store", "iotsec-system", spec("audit-store"), ["audit-0"])
    by_name = {t["name"]: t for t in config["targets"]}
    assert by_name["offsite"]["ssh_key_file"] == "/etc/iotsec/sftp/offsite/ssh-privatekey"
    assert by_name["offsite"]["known_hosts_file"] == "/etc/iotsec/sftp/offsite/known_hosts"
    assert "ssh_key_file" not in by_name["primary"]


def test_sftp_jobs_are_valid_kubernetes_and_pass_iotsecs_own_admission():
    p, s = sftp_plan()
    version = kubernetes_validate.latest_version()
    restore = restore_job("audit-store", "iotsec-system", s, "audit-0-restored", "latest", "restore-1")
    for obj in [*p.objects, restore]:
        kubernetes_validate.validate(obj, version, strict=True)
    for obj in [o for o in p.objects if o["kind"] == "CronJob"]:
        decision = decide(obj, Context(DomainPolicy("support", "support"), datetime.now(UTC)))
        assert [v.line() for v in decision.violations] == []


# -- local repositories live on a claim; repositories are created by one explicit init Job (issue 14) -------------

LOCAL = [
    {"name": "primary", "repository": "/backups/tsdb", "claimName": "backup-repository"},
    {"name": "offsite", "role": "offsite", "repository": "s3:https://s3.example.com/bucket/tsdb"},
]


def _pods_of_every_job(p, s) -> dict[str, dict]:
    from iotsec.build.backup import init_job

    found = {job: cron(p, job)["spec"]["jobTemplate"]["spec"]["template"]["spec"] for job in ("backup", "verify")}
    found["init"] = init_job("timeseries", "iot-processing", s)["spec"]["template"]["spec"]
    found["restore"] = restore_job("timeseries", "iot-processing", s, "tsdb-0-new", "latest", "r-1")["spec"][
        "template"
    ]["spec"]
    return found


def test_a_local_repositorys_claim_is_mounted_at_its_path_by_every_job_and_never_backed_up():
    s = spec(targets=LOCAL)
    p = plan_backup("timeseries", "iot-processing", s, ["tsdb-0", "backup-repository"])
    assert p.claims == ["tsdb-0"], "the repository's own claim is not a source"
    for job, pod in _pods_of_every_job(p, s).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        repository = volumes[mounts["/backups/tsdb"]["name"]]
        assert repository["persistentVolumeClaim"] == {"claimName": "backup-repository"}, job
        assert not mounts["/backups/tsdb"].get("readOnly"), f"{job}: restic writes locks and packs"
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims.count("backup-repository") == 1, job


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ({"repository": "/backups/tsdb"}, "name it with claimName"),
        ({"repository": "local:/backups/tsdb"}, "name it with claimName"),
        ({"repository": "s3:s3.example.com/b", "claimName": "x"}, "other repositories take no claimName"),
        ({"repository": "/tmp/repository", "claimName": "x"}, "mounted over the Job's /tmp"),
        ({"repository": "/data/repository", "claimName": "x"}, "mounted over the Job's /data"),
        ({"repository": "/backups/../etc", "claimName": "x"}, "absolute, normalised"),
    ],
)
def test_a_local_repository_that_a_job_could_not_hold_is_refused_with_the_reason(target, problem):
    from iotsec.api.validation import validate_resource

    body = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"schedule": "0 2 * * *", "pvcNames": ["d"], "targets": [{"name": "primary", **target}]},
    }
    messages = [str(p) for p in validate_resource(body)]
    assert any(problem in m for m in messages), messages


def test_the_init_job_is_the_only_job_that_creates_repositories_once_per_set_of_targets():
    from iotsec.build.backup import init_job

    s = spec(targets=LOCAL)
    job = init_job("timeseries", "iot-processing", s)
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["backup", "init"]
    p = plan_backup("timeseries", "iot-processing", s, ["tsdb-0"])
    for name in ("backup", "verify", "drill"):
        args = cron(p, name)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "init" not in args, name
    reordered = spec(targets=list(reversed(LOCAL)))
    assert init_job("timeseries", "iot-processing", reordered)["metadata"]["name"] == job["metadata"]["name"]
    moved = spec(targets=[{**LOCAL[0], "repository": "/backups/elsewhere"}, LOCAL[1]])
    assert init_job("timeseries", "iot-processing", moved)["metadata"]["name"] != job["metadata"]["name"]
