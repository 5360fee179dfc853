"""Driving the testenv's control plane from a test: kubectl as the admin, and a restart of kube-apiserver with
extra flags (the audit tiers). etcd keeps its data across a restart, and a running node keeps its pods."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTENV = Path(os.environ.get("IOTSEC_TESTENV_SCRIPTS", REPO.parent / "shared" / "k8s-testenv"))


def kubectl(*args: str) -> str:
    """kubectl as the kubeconfig's admin; a Forbidden answer is returned (tests look for it), any other error fails."""
    binary = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Forbidden" not in done.stderr and "forbidden" not in done.stderr:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout + done.stderr


def restart_control_plane(extra_args: str) -> None:
    """Stop and start the control plane with APISERVER_EXTRA_ARGS=`extra_args` ("" for none)."""
    env = {**os.environ, "APISERVER_EXTRA_ARGS": extra_args}
    subprocess.run(["bash", str(TESTENV / "stop.sh")], check=True, capture_output=True, timeout=120)
    done = subprocess.run(["bash", str(TESTENV / "start.sh")], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
