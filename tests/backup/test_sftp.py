"""sftp: targets (issue 14): parsing restic's two URL forms, the ssh command restic runs, config errors, and a real
sshd on 127.0.0.1 that the runner backs up to, verifies and restores from with the real restic."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import pwd
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotsec.servers.backupjob.config import ConfigError, load_config
from iotsec.servers.backupjob.restic import Target
from iotsec.servers.backupjob.runner import main as runner
from iotsec.servers.backupjob.sftp import SftpLocation, parse_sftp, ssh_argv

SSHD = "/usr/sbin/sshd"
PASSWORD = "c0rrect-h0rse-battery-staple"


# -- parsing and the ssh command ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "location"),
    [
        ("sftp:backup@vault.example.net:/srv/audit", SftpLocation("backup", "vault.example.net", None, "/srv/audit")),
        ("sftp:vault:relative/repo", SftpLocation(None, "vault", None, "relative/repo")),
        ("sftp://backup@host:2222//srv/repo", SftpLocation("backup", "host", 2222, "/srv/repo")),
        ("sftp://backup@host//srv/repo", SftpLocation("backup", "host", None, "/srv/repo")),
        ("sftp:backup@[2001:db8::1]:/srv/repo", SftpLocation("backup", "2001:db8::1", None, "/srv/repo")),
        ("sftp://backup@[::1]:2222//srv/repo", SftpLocation("backup", "::1", 2222, "/srv/repo")),
        ("sftp://b@ck@host:22//r", SftpLocation("b@ck", "host", 22, "/r")),
    ],
)
def test_both_url_forms_parse(repository, location):
    assert parse_sftp(repository) == location


@pytest.mark.parametrize(
    "repository",
    [
        "sftp:host",
        "sftp://host",
        "sftp://u@host:0//r",
        "sftp://u@host:http//r",
        "sftp://u@[::1//r",
        "sftp:u@-oProxyCommand=x:/r",
        "sftp://-oProxyCommand=x//r",
        "s3:host/bucket",
    ],
)
def test_unusable_sftp_urls_are_refused(repository):
    with pytest.raises(ValueError, match=r"sftp|IPv6"):
        parse_sftp(repository)


def test_the_ssh_command_trusts_only_the_mounted_key_and_known_hosts_and_ignores_home():
    argv = ssh_argv(parse_sftp("sftp://backup@[::1]:2222//srv/repo"), "/k/ssh-privatekey", "/k/known_hosts")
    pairs = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"}
    assert argv[:3] == ["ssh", "-F", "/dev/null"], "no user or system ssh_config"
    assert {
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "UserKnownHostsFile=/k/known_hosts",
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        "UpdateHostKeys=no",
    } <= pairs
    assert not [p for p in pairs if "accept-new" in p or (p.endswith("=no") and "Strict" in p)]
    assert argv[argv.index("-i") + 1] == "/k/ssh-privatekey"
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:] == ["backup@::1", "-s", "sftp"]
    assert "-p" not in ssh_argv(parse_sftp("sftp:u@h:/r"), "/k/a", "/k/b"), "no port: ssh's default 22"


def test_a_target_passes_the_command_as_restics_sftp_option_and_others_pass_none():
    target = Target("vault", "sftp:u@host:/r", "offsite", ssh_key_file="/k/key", known_hosts_file="/k/kh")
    (flag, option) = target.options()
    assert flag == "-o"
    assert option.startswith("sftp.command=ssh -F /dev/null ")
    assert option.endswith(" u@host -s sftp")
    assert Target("local", "/srv/repo").options() == []
    with pytest.raises(ValueError, match="blanks"):
        Target("v", "sftp:u@host:/r", ssh_key_file="/k/my key", known_hosts_file="/k/kh")


# -- configuration errors ----------------------------------------------------------------------------------------


def write_config(tmp_path: Path, sftp_target: dict, primary: str | None = None) -> Path:
    config = {
        "paths": [str(tmp_path)],
        "targets": [
            {"name": "primary", "role": "primary", "repository": primary or str(tmp_path / "repo")},
            {"name": "vault", "role": "offsite", **sftp_target},
        ],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_a_missing_key_or_known_hosts_is_a_config_error_naming_the_target_and_the_secret_keys(tmp_path):
    key = tmp_path / "ssh-privatekey"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n")
    repository = {"repository": "sftp:u@host:/r", "ssh_key_file": str(key)}
    with pytest.raises(ConfigError) as caught:
        load_config(str(write_config(tmp_path, {**repository, "known_hosts_file": str(tmp_path / "kh")})), "backup")
    assert "'vault'" in str(caught.value)
    assert "ssh-privatekey and known_hosts" in str(caught.value)
    assert "known_hosts at" in str(caught.value)
    with pytest.raises(ConfigError, match=r"'vault'.*ssh-privatekey and known_hosts"):
        load_config(str(write_config(tmp_path, {"repository": "sftp:u@host:/r"})), "verify")
    assert "not-a-real-key" not in str(caught.value)


def test_the_runner_exits_2_for_a_missing_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESTIC_PASSWORD", PASSWORD)
    config = write_config(tmp_path, {"repository": "sftp:u@host:/r", "ssh_key_file": str(tmp_path / "none")})
    assert runner(["backup", "--config", str(config), "--result", str(tmp_path / "result.json")]) == 2
    result = (tmp_path / "result.json").read_text()
    assert "bad config" in result
    assert "'vault'" in result
    assert "ssh-privatekey and known_hosts" in result


def test_a_copy_between_two_sftp_repositories_is_refused(tmp_path):
    files = {"ssh_key_file": str(tmp_path / "k"), "known_hosts_file": str(tmp_path / "kh")}
    path = write_config(tmp_path, {"repository": "sftp:u@b:/r", **files}, primary="sftp:u@a:/r")
    config = json.loads(path.read_text())
    config["targets"][0].update(files)
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="all sftp"):
        load_config(str(path), "backup")


# -- a real sshd on 127.0.0.1 ------------------------------------------------------------------------------------


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    path.chmod(0o400)
    return path.with_suffix(".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if not os.path.exists(SSHD) or shutil.which("ssh") is None or shutil.which("restic") is None:
        pytest.skip("needs Debian's openssh-server (/usr/sbin/sshd), openssh-client and restic (.ci/run installs them)")
    folder = tmp_path_factory.mktemp("sshd")
    host_key = keygen(folder / "host_key")
    user_key = keygen(folder / "user_key")
    (folder / "authorized_keys").write_text(user_key + "\n")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        _await_listening(proc)
        yield {"folder": folder, "port": port, "host_key": host_key, "user": getpass.getuser()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _await_listening(proc: subprocess.Popen) -> None:
    """Until sshd says it listens (bounded: 20 s); its log goes on to a pipe nobody reads, so drop it later."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    log = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = proc.stderr.readline()
        if not line:
            break
        log += line
        if b"Server listening on" in line:
            os.set_blocking(proc.stderr.fileno(), False)
            return
    raise AssertionError(f"sshd did not start: {log.decode(errors='replace')}")


def secret_files(sshd: dict, folder: Path, host_key: str | None = None) -> tuple[Path, Path]:
    """What the kubelet mounts from the target's Secret: ssh-privatekey and known_hosts."""
    folder.mkdir(parents=True)
    key = folder / "ssh-privatekey"
    shutil.copy(sshd["folder"] / "user_key", key)
    key.chmod(0o400)
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd['port']} {host_key or sshd['host_key']}\n")
    return key, known_hosts


def job(tmp_path: Path, repository: str, key: Path, known_hosts: Path, data: Path) -> Path:
    config = {
        "paths": [str(data)],
        "targets": [
            {
                "name": "vault",
                "role": "primary",
                "repository": repository,
                "ssh_key_file": str(key),
                "known_hosts_file": str(known_hosts),
            }
        ],
        "tags": ["policy=sftp"],
        "read_data_subset": "100%",
        "destination": str(tmp_path / "restored"),
        "cache_dir": str(tmp_path / "cache"),
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def run(operation: str, config: Path, tmp_path: Path) -> tuple[int, dict, float]:
    started = time.monotonic()
    code = runner([operation, "--config", str(config), "--result", str(tmp_path / f"{operation}.json")])
    return code, json.loads((tmp_path / f"{operation}.json").read_text()), time.monotonic() - started


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def job_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", PASSWORD)
    monkeypatch.setenv("HOME", "/nonexistent")  # as in the image: ssh must need nothing from a home directory
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


MEGABYTES = int(os.environ.get("IOTSEC_SFTP_TEST_MEGABYTES", "16"))  # larger for a figure


def test_init_backup_verify_restore_over_a_real_sshd(sshd, tmp_path, job_env, capsys):
    data = tmp_path / "data"
    (data / "sensors").mkdir(parents=True)
    (data / "sensors" / "random.bin").write_bytes(os.urandom(MEGABYTES * 1024 * 1024))
    (data / "sensors" / "readings.csv").write_text("".join(f"{i},{i * 0.5}\n" for i in range(10000)))
    key, known_hosts = secret_files(sshd, tmp_path / "secret")
    repo = tmp_path / "repo"
    config = job(tmp_path, f"sftp://{sshd['user']}@127.0.0.1:{sshd['port']}/{repo}", key, known_hosts, data)
    times = {}
    for operation in ("init", "backup", "verify", "restore"):
        code, result, times[operation] = run(operation, config, tmp_path)
        assert code == 0, result
        assert result["succeeded"], result
    assert (repo / "config").is_file(), "the repository is on the sftp server's disk"
    restored = tmp_path / "restored" / data.relative_to("/")
    assert digest(restored) == digest(data)
    assert key.read_bytes().decode() not in capsys.readouterr().out
    print(f"sftp {MEGABYTES} MiB: " + ", ".join(f"{op} {seconds:.1f} s" for op, seconds in times.items()))


def test_a_changed_host_key_fails_without_accepting_it(sshd, tmp_path, job_env, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("x")
    other = keygen(tmp_path / "impostor")
    key, known_hosts = secret_files(sshd, tmp_path / "secret", host_key=other)
    before = known_hosts.read_bytes()
    repo = tmp_path / "repo"
    config = job(tmp_path, f"sftp://{sshd['user']}@127.0.0.1:{sshd['port']}/{repo}", key, known_hosts, data)
    for operation in ("init", "backup"):
        code, result, _ = run(operation, config, tmp_path)
        assert code == 1
        assert not result["succeeded"]
        message = " ".join(result["errors"])
        assert "host key" in message
        assert "known_hosts" in message
    assert known_hosts.read_bytes() == before, "the server's key was not added"
    assert not repo.exists(), "nothing was created on a server whose key does not match"
    out = capsys.readouterr()
    assert key.read_text() not in out.out + out.err


def test_a_key_the_server_does_not_accept_fails_with_ssh_s_reason(sshd, tmp_path, job_env):
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("x")
    key, known_hosts = secret_files(sshd, tmp_path / "secret")
    key.chmod(0o600)
    key.unlink()
    keygen(key)  # a key that is not in the server's authorized_keys
    config = job(
        tmp_path, f"sftp://{sshd['user']}@127.0.0.1:{sshd['port']}/{tmp_path / 'repo'}", key, known_hosts, data
    )
    code, result, _ = run("init", config, tmp_path)
    assert code == 1
    assert "Permission denied (publickey)" in " ".join(result["errors"])
    assert key.read_text() not in json.dumps(result)


def test_restic_as_an_unprivileged_user_without_home_reads_a_key_mounted_like_the_kubelets(sshd, tmp_path):
    """In the Job: UID 10001, HOME=/nonexistent, the Secret's files root-owned, mode 0400 widened to 0440 with the
    pod's fsGroup as their group. Here `nobody` stands in for UID 10001 (it too has HOME=/nonexistent)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run restic as another user")
    nobody = pwd.getpwnam("nobody")
    secret = Path(tempfile.mkdtemp(prefix="iotsec-sftp-"))  # pytest's tmp_path is private to root
    try:
        secret.chmod(0o755)
        key, known_hosts = secret_files(sshd, secret / "offsite")
        for path in (key, known_hosts):
            os.chown(path, 0, nobody.pw_gid)
            path.chmod(0o440)
        os.chown(secret / "offsite", 0, nobody.pw_gid)
        (secret / "offsite").chmod(0o750)
        target = Target("offsite", f"sftp://{sshd['user']}@127.0.0.1:{sshd['port']}/{tmp_path / 'repo'}")
        target = Target(target.name, target.repository, ssh_key_file=str(key), known_hosts_file=str(known_hosts))
        as_nobody = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--"]
        environment = ["HOME=/nonexistent", "PATH=/usr/bin:/bin", f"RESTIC_PASSWORD={PASSWORD}"]
        environment.append(f"RESTIC_REPOSITORY={target.repository}")
        done = subprocess.run(
            [*as_nobody, "env", "-i", *environment, "restic", "--no-cache", *target.options(), "init"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "repo" / "config").is_file()
        assert "UNPROTECTED" not in done.stderr
    finally:
        shutil.rmtree(secret)
