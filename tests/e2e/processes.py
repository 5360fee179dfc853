"""The product's own processes (`iotsec run`, `iotsec webhook`) started for the live tier, logs kept."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.e2e.conftest import eventually

RESYNC_SECONDS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM (graceful shutdown is part of what is tested), SIGKILL after `timeout`."""
    if process and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Operator:
    """`iotsec run` in a subprocess, with its log kept for failure reports."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.metrics_port = _free_port()
        self.liveness_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **env_overrides: str) -> None:
        command = [
            sys.executable,
            "-m",
            "iotsec",
            "run",
            "--verbose",
            "--resync-seconds",
            str(RESYNC_SECONDS),
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
        ]
        self.env = {**os.environ, "IOTSEC_METRICS_HOST": "127.0.0.1", **getattr(self, "env", {}), **env_overrides}
        env = self.env
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        eventually(self.alive, timeout=60, what="operator liveness endpoint")

    def alive(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"operator exited:\n{self.log()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.process, timeout=30)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


class WebhookProcess:
    """`iotsec webhook` reading its certificate from the operator-managed Secret through the API."""

    def __init__(self, log_path: Path, tls_secret: str):
        self.log_path, self.tls_secret = log_path, tls_secret
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, cafile: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "iotsec",
            "webhook",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--tls-secret-ref",
            self.tls_secret,
            "--refresh-seconds",
            "1",
            "--metrics-port",
            "0",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        eventually(lambda: self.ready(cafile), timeout=60, what="webhook /readyz")

    def ready(self, cafile: Path) -> bool:
        import ssl

        assert self.process is not None
        assert self.process.poll() is None, f"webhook exited:\n{self.log_path.read_text()[-4000:]}"
        context = ssl.create_default_context(cafile=str(cafile))
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", timeout=2, context=context) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.process, timeout=15)
