"""Backups as deployed (issue 14): a BackupPolicy in a member namespace, reconciled by the operator in its pod, backs
up a claim with real data through Jobs running the product's image on the node: to a local repository on a claim
and to an sftp server running in a pod (Debian's openssh-server, `make e2e-images`). Then verify, a restore into a
new claim compared byte for byte, and a drill whose measured restore time lands in the status. The egress the
operator opened for the Jobs is judged by network-config-analyzer on the policies read back from the cluster (the
node enforces none).

The volumes are hostPath PersistentVolumes of a StorageClass without a provisioner, made by the test: the node is
this machine, so the test writes the data and reads the restored files where the kubelet mounts them from.

Where the server serves no batch/v1 CronJob (1.20) the test makes each Job from the CronJob the operator plans,
and there, without generic ephemeral volumes (GA in 1.23), gives the drill's scratch volume a claim of the same spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.api.backuppolicy import BackupPolicySpec
from iotsec.build.backup import plan_backup
from iotsec.model.platform import Image
from tests.e2e.conftest import eventually
from tests.e2e.deployed import (
    delete_quietly,
    domain_name,
    domain_namespace,
    host_path_volume,
    local_storage_class,
    require_install,
)
from tests.netpol import Pod, allows, run_nca

SSHD_IMAGE = "localhost/iotsec/e2e-sshd:1"  # tools/build_e2e_images.sh
POLICY = "telemetry"
SUFFIX = uuid.uuid4().hex[:5]
STORAGE_CLASS = f"iotsec-e2e-{SUFFIX}"
SFTP_PORT = 2222
GROUP, VERSION = "iotsec.io", "v1alpha1"
SSHD_CONFIG = f"""Port {SFTP_PORT}
HostKey /etc/iotsec-sshd/ssh_host_ed25519_key
PidFile none
UsePAM no
StrictModes no
AuthorizedKeysFile /etc/iotsec-sshd/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers vault
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


@dataclass
class Site:
    namespace: str
    vault: str
    root: Path
    sftp_ip: str
    image: str = ""


def _restricted(run_as: int = 10001) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {
        "runAsNonRoot": True,
        "runAsUser": run_as,
        "runAsGroup": run_as,
        "fsGroup": run_as,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod, container


def _keypair(folder: Path, name: str) -> tuple[str, str]:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / name)], check=True, timeout=30
    )
    return (folder / name).read_text(), (folder / f"{name}.pub").read_text()


def _volume(core, name: str, path: Path, claim: tuple[str, str] | None) -> None:
    host_path_volume(core, name, path, STORAGE_CLASS, claim, labels={"iotsec-e2e": SUFFIX})


def _claim(core, namespace: str, name: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": STORAGE_CLASS,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def _write_data(folder: Path) -> None:
    (folder / "readings" / "2026" / "12").mkdir(parents=True)
    for day in range(1, 4):
        lines = "".join(f"meter-{i},{day},{i * 0.25:.2f}\n" for i in range(4000))
        (folder / "readings" / "2026" / "12" / f"{day:02}.csv").write_text(lines)
    (folder / "firmware.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (folder / "empty").write_bytes(b"")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _contents(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _sftp_server(core, apps_api, vault: str, keys: Path) -> str:
    """Debian's sshd in a pod as UID 10001 on port 2222, a conforming workload of the vault's own SecurityDomain,
    with a Service; returns the Service's ClusterIP."""
    host_key, _ = _keypair(keys, "ssh_host_ed25519_key")
    client_key, client_public = _keypair(keys, "client")
    core.create_namespaced_secret(
        vault,
        {
            "metadata": {"name": "sshd"},
            "stringData": {
                "sshd_config": SSHD_CONFIG,
                "ssh_host_ed25519_key": host_key,
                "authorized_keys": client_public,
            },
        },
    )
    pod_security, container_security = _restricted()
    labels = {"app.kubernetes.io/name": "vault"}
    deployment = {
        "metadata": {"name": "vault", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "iotsec.io/security-level": "standard"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security,
                    "containers": [
                        {
                            "name": "sshd",
                            "image": SSHD_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["-f", "/etc/iotsec-sshd/sshd_config"],
                            "ports": [{"containerPort": SFTP_PORT, "protocol": "TCP"}],
                            "readinessProbe": {"tcpSocket": {"port": SFTP_PORT}, "periodSeconds": 1},
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                            },
                            "securityContext": {**container_security, "readOnlyRootFilesystem": True},
                            "volumeMounts": [
                                {"name": "sshd", "mountPath": "/etc/iotsec-sshd", "readOnly": True},
                                {"name": "repositories", "mountPath": "/srv/vault"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "sshd", "secret": {"secretName": "sshd", "defaultMode": 0o440}},
                        {"name": "repositories", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }
    apps_api.create_namespaced_deployment(vault, deployment)  # at once: the webhook watches domains
    service = core.create_namespaced_service(
        vault,
        {
            "metadata": {"name": "vault"},
            "spec": {"selector": labels, "ports": [{"port": SFTP_PORT, "targetPort": SFTP_PORT, "protocol": "TCP"}]},
        },
    )

    def ready() -> bool:
        found = apps_api.read_namespaced_deployment("vault", vault)
        return (found.status.ready_replicas or 0) >= 1

    eventually(ready, timeout=90, what="the sftp server's pod Ready on the node")
    (keys / "client-key").write_text(client_key)
    host_public = (keys / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    (keys / "known_hosts").write_text(f"[{service.spec.cluster_ip}]:{SFTP_PORT} {' '.join(host_public)}\n")
    return service.spec.cluster_ip


def _vault_domain(backups: str) -> dict[str, Any]:
    """The vault's SecurityDomain: port 2222 open to the backup Jobs of the backups domain, to nothing else."""
    return {
        "zone": "support",
        "imagePinning": "any",  # SSHD_IMAGE is tagged 1, which imagePinning: version refuses
        "allowedPorts": [{"port": SFTP_PORT}],
        "allow": [
            {
                "name": "from-backup-jobs",
                "from": [{"domain": backups, "podSelector": {"matchLabels": {"iotsec.io/owner-kind": "BackupPolicy"}}}],
                "ports": [{"port": SFTP_PORT}],
            }
        ],
    }


def _spec(site: Site) -> dict[str, Any]:
    return {
        "schedule": "0 2 * * *",
        "pvcNames": ["data"],
        "targets": [
            {"name": "local", "repository": "/backups/telemetry", "claimName": "repository"},
            {
                "name": "vault",
                "role": "offsite",
                "repository": f"sftp://vault@{site.sftp_ip}:{SFTP_PORT}//srv/vault/telemetry",
                "credentialsSecret": "vault-credentials",
            },
        ],
        "verification": {"readDataSubset": "100%"},
        "restoreDrill": {"enabled": True, "storageClassName": STORAGE_CLASS},
    }


@pytest.fixture(scope="module")
def site(api_client, core, custom) -> Iterator[Site]:
    apps_api = require_install(api_client)
    remove_storage_class = local_storage_class(api_client, STORAGE_CLASS)
    root = Path(tempfile.mkdtemp(prefix=f"iotsec-e2e-{SUFFIX}-", dir="/var/tmp"))
    root.chmod(0o755)
    backups = domain_name("backups")
    try:
        with (
            domain_namespace(core, custom, name=backups) as namespace,
            domain_namespace(core, custom, "vault", **_vault_domain(backups)) as vault,
        ):
            site = Site(namespace, vault, root, _sftp_server(core, apps_api, vault, _keys(root)))
            _volume(core, f"{namespace}-data", root / "data", (namespace, "data"))
            _volume(core, f"{namespace}-repository", root / "repository", (namespace, "repository"))
            for spare in ("spare-1", "spare-2", "spare-3"):
                _volume(core, f"{namespace}-{spare}", root / spare, None)
            _write_data(root / "data")
            for name in ("data", "repository"):
                _claim(core, namespace, name)
            keys = _keys(root)
            core.create_namespaced_secret(
                namespace,
                {
                    "metadata": {"name": "vault-credentials"},
                    "type": "kubernetes.io/ssh-auth",
                    "stringData": {
                        "ssh-privatekey": (keys / "client-key").read_text(),
                        "known_hosts": (keys / "known_hosts").read_text(),
                    },
                },
            )
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupPolicy", "metadata": {"name": POLICY}}
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "backuppolicies", {**body, "spec": _spec(site)}
            )
            yield site
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "backuppolicies", POLICY)
    finally:
        for volume in core.list_persistent_volume(label_selector=f"iotsec-e2e={SUFFIX}").items:
            delete_quietly(lambda v=volume: core.delete_persistent_volume(v.metadata.name))
        remove_storage_class()
        shutil.rmtree(root, ignore_errors=True)


def _keys(root: Path) -> Path:
    keys = root / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    return keys


# -- reading back --------------------------------------------------------------------------------------------------


def _policy(custom, site: Site) -> dict[str, Any]:
    return custom.get_namespaced_custom_object(GROUP, VERSION, site.namespace, "backuppolicies", POLICY)


def _condition(custom, site: Site, type_: str) -> dict[str, Any]:
    conditions = (_policy(custom, site).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def _job_story(api_client, namespace: str, job: str) -> str:
    """What a failed Job's pod said: its termination message and the end of its log, for the assertion message."""
    core = client.CoreV1Api(api_client)
    lines = []
    for pod in core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items:
        for status in pod.status.container_statuses or []:
            terminated = status.state.terminated
            lines.append(f"{pod.metadata.name}: {terminated.message if terminated else status.state}")
        try:
            lines.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=20))
        except ApiException as exc:
            lines.append(f"(no log: {exc.reason})")
    return "\n".join(lines)


def _finished(api_client, namespace: str, job: str, timeout: float = 180) -> None:
    batch = client.BatchV1Api(api_client)

    def done() -> str | None:
        conditions = batch.read_namespaced_job(job, namespace).status.conditions or []
        return next((c.type for c in conditions if c.status == "True" and c.type in ("Complete", "Failed")), None)

    outcome = eventually(done, timeout=timeout, what=f"Job {namespace}/{job} finished")
    assert outcome == "Complete", f"Job {job} failed:\n{_job_story(api_client, namespace, job)}"


def _condition_true(custom, site: Site, type_: str, timeout: float = 60) -> dict[str, Any]:
    def reported() -> dict[str, Any] | None:
        condition = _condition(custom, site, type_)
        return condition if condition.get("status") in ("True", "False") else None

    condition = eventually(reported, timeout=timeout, what=f"condition {type_} reported by the operator's pod")
    assert condition["status"] == "True", condition
    return condition


def _serves_cronjobs(api_client) -> bool:
    return any(r.name == "cronjobs" for r in client.BatchV1Api(api_client).get_api_resources().resources)


def _ephemeral_volumes(api_client) -> bool:
    version = client.VersionApi(api_client).get_code()
    return (int(version.major), int(version.minor.rstrip("+"))) >= (1, 23)


def _job_template(api_client, custom, site: Site, kind: str) -> dict[str, Any]:
    """The CronJob's jobTemplate: read from the cluster where it is served, else the one the operator plans (with the
    image its init Job runs, which is the operator's configured image)."""
    name = f"iotsec-{kind}-{POLICY}"
    if _serves_cronjobs(api_client):
        cron = client.BatchV1Api(api_client).read_namespaced_cron_job(name, site.namespace)
        return api_client.sanitize_for_serialization(cron)["spec"]["jobTemplate"]
    spec = BackupPolicySpec.model_validate(_policy(custom, site)["spec"])
    plan = plan_backup(POLICY, site.namespace, spec, ["data"], Image(site.image))
    return next(o for o in plan.objects if o["kind"] == "CronJob" and o["metadata"]["name"] == name)["spec"][
        "jobTemplate"
    ]


def _run(api_client, custom, core, site: Site, kind: str) -> str:
    """One run of a schedule, as `kubectl create job --from=cronjob/…` would start it; returns the Job's name."""
    template = _job_template(api_client, custom, site, kind)
    pod = template["spec"]["template"]["spec"]
    if kind == "drill" and not _ephemeral_volumes(api_client):
        scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
        claim_spec = scratch.pop("ephemeral")["volumeClaimTemplate"]["spec"]
        assert claim_spec["storageClassName"] == STORAGE_CLASS, "the drill's scratch volume is of the spec's class"
        _claim(core, site.namespace, "drill-scratch")
        scratch["persistentVolumeClaim"] = {"claimName": "drill-scratch"}
    name = _start(api_client, site, kind, template)
    _finished(api_client, site.namespace, name)
    return name


def _start(api_client, site: Site, kind: str, template: dict[str, Any]) -> str:
    name = f"{kind}-{uuid.uuid4().hex[:5]}"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**template.get("metadata", {}), "name": name, "namespace": site.namespace},
        "spec": template["spec"],
    }
    client.BatchV1Api(api_client).create_namespaced_job(site.namespace, job)
    return name


# -- the tests, in order -------------------------------------------------------------------------------------------


def test_the_operator_creates_the_repositories_with_one_init_job_of_its_image(site, api_client, custom):
    batch = client.BatchV1Api(api_client)
    selector = f"iotsec.io/owner-name={POLICY},iotsec.io/backup-job=init"

    def created() -> Any:
        return next(iter(batch.list_namespaced_job(site.namespace, label_selector=selector).items), None)

    init = eventually(created, timeout=60, what="the init Job created by the operator's pod")
    container = init.spec.template.spec.containers[0]
    assert container.args[:2] == ["backup", "init"]
    assert container.image.startswith("localhost/iotsec/iotsec:"), "the image make image built, from the chart"
    site.image = container.image
    _finished(api_client, site.namespace, init.metadata.name)
    condition = _condition_true(custom, site, "RepositoriesReady")
    assert init.metadata.name in condition["message"]
    assert (site.root / "repository" / "config").is_file(), "the local repository, on its claim"


def test_a_backup_job_of_the_products_image_backs_up_to_the_claim_and_the_sftp_server(site, api_client, custom, core):
    _run(api_client, custom, core, site, "backup")
    _condition_true(custom, site, "BackupSucceeded")
    status = _policy(custom, site)["status"]
    snapshots = {t["name"]: t["snapshots"] for t in status["targets"]}
    assert snapshots == {"local": 1, "vault": 1}, status["targets"]
    assert status["lastDurationSeconds"] > 0
    assert status["lastSuccess"]


def test_verify_reads_back_every_pack_of_both_repositories(site, api_client, custom, core):
    _run(api_client, custom, core, site, "verify")
    _condition_true(custom, site, "Verified")
    assert _policy(custom, site)["status"]["lastVerified"]


def test_the_jobs_egress_reaches_the_sftp_server_and_nothing_else_by_nca(site, api_client, tmp_path):
    """The policies the operator applied, read back, judged by network-config-analyzer."""
    core = client.CoreV1Api(api_client)
    networking = client.NetworkingV1Api(api_client)
    policies = [
        api_client.sanitize_for_serialization(p)
        for ns in (site.namespace, site.vault)
        for p in networking.list_namespaced_network_policy(ns).items
    ]
    assert any(p["metadata"]["name"] == f"iotsec-backup-{POLICY}" for p in policies)
    ns_labels = {
        ns: core.read_namespace(ns).metadata.labels or {} for ns in (site.namespace, site.vault, "kube-system")
    }
    job_labels = _job_template(api_client, client.CustomObjectsApi(api_client), site, "backup")["spec"]["template"][
        "metadata"
    ]["labels"]
    pods = {
        f"{site.namespace}/backup": Pod(site.namespace, job_labels),
        f"{site.namespace}/app": Pod(
            site.namespace, {"app.kubernetes.io/name": "app", "iotsec.io/security-level": "standard"}
        ),
        f"{site.vault}/vault": Pod(site.vault, {"app.kubernetes.io/name": "vault"}),
        "kube-system/dns": Pod("kube-system", {"k8s-app": "kube-dns"}),
    }
    connectivity = run_nca(policies, ns_labels, pods, tmp_path)

    def conns(source: str, target: str):
        return connectivity.get((source, target), frozenset())

    backup, app, vault, dns = (
        f"{site.namespace}/backup",
        f"{site.namespace}/app",
        f"{site.vault}/vault",
        "kube-system/dns",
    )
    assert allows(conns(backup, vault), "TCP", SFTP_PORT), "the Job reaches its sftp target"
    assert allows(conns(backup, dns), "UDP", 53), "and DNS"
    assert not allows(conns(backup, vault), "TCP", 22), "no port the spec does not name"
    assert not allows(conns(backup, vault), "TCP", 443)
    assert not allows(conns(app, vault), "TCP", SFTP_PORT), "the opening is the Job's alone, not the namespace's"


def test_a_restore_into_a_new_claim_gives_back_the_same_bytes(site, api_client, custom, core):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "iotsec",
            "restore",
            POLICY,
            "-n",
            site.namespace,
            "--claim",
            "data",
            "--size",
            "1Gi",
            "--storage-class",
            STORAGE_CLASS,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    job = client.BatchV1Api(api_client).read_namespaced_job(result["job"], site.namespace)
    assert job.spec.template.spec.containers[0].image == site.image, "the image that wrote the snapshots"
    _finished(api_client, site.namespace, result["job"])
    claim = core.read_namespaced_persistent_volume_claim(result["claim"], site.namespace)
    volume = core.read_persistent_volume(claim.spec.volume_name)
    restored = Path(volume.spec.host_path.path)
    assert restored != site.root / "data"
    assert _contents(restored) == _contents(site.root / "data")
    assert len(_contents(restored)) == 5


def test_a_drill_restores_and_its_measured_time_lands_in_the_status(site, api_client, custom, core):
    _run(api_client, custom, core, site, "drill")
    condition = _condition_true(custom, site, "RestoreVerified")
    assert "X1369-9.6.1-2" in json.dumps(condition)
    seconds = _policy(custom, site)["status"]["lastRestoreSeconds"]
    assert 0 < seconds < 180, seconds


def test_a_repository_that_went_missing_fails_the_backup_and_is_not_created_again(site, api_client, custom, core):
    """The claim's repository emptied (a volume swapped, a bucket cleared): the next backup must fail, not report
    success into a fresh repository beside the lost snapshots. Runs last: it destroys the local repository."""
    repository = site.root / "repository"
    for entry in repository.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    name = _start(api_client, site, "backup", _job_template(api_client, custom, site, "backup"))
    with pytest.raises(AssertionError, match=f"Job {name} failed"):
        _finished(api_client, site.namespace, name)

    def reported() -> dict[str, Any] | None:
        condition = _condition(custom, site, "BackupSucceeded")
        return condition if condition.get("status") == "False" else None

    condition = eventually(reported, timeout=60, what="BackupSucceeded False for the missing repository")
    assert name in condition["message"]
    assert "local" in condition["message"], "the message names the target"
    assert not any(repository.iterdir()), "no repository was created in its place"
