"""The product's image as `make image` writes it (build/iotsec-image.tar), without a cluster.

Skips with the reason when the tar (or, for the runs, buildah) is missing; IOTSEC_IMAGE_REQUIRED=1 (for CI after
`make image`) turns a skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.conftest import ROOT

TAR = ROOT / "build" / "iotsec-image.tar"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
REF = f"localhost/iotsec/iotsec:{VERSION}"
BUILD_SETTINGS = {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "APT_MIRROR"}


def _missing(reason: str) -> None:
    if os.environ.get("IOTSEC_IMAGE_REQUIRED") == "1":
        pytest.fail(f"IOTSEC_IMAGE_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason} (make image builds it)")


@pytest.fixture(scope="module")
def image() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The tar's manifest and image config."""
    if not TAR.is_file():
        _missing(f"no {TAR.relative_to(ROOT)}")
    with tarfile.open(TAR) as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        config = json.load(_member(tar, manifest[0]["Config"]))
    return manifest, config


def _member(tar: tarfile.TarFile, name: str) -> Any:
    handle = tar.extractfile(name)
    assert handle is not None, name
    return handle


def _layer_entries(tar: tarfile.TarFile, layer: str) -> Iterator[str]:
    with tarfile.open(fileobj=_member(tar, layer)) as inner:
        for member in inner:
            yield str(PurePosixPath(member.name.removeprefix("./")))


def final_paths() -> set[str]:
    """Every path of the image's root filesystem: the layers applied in order, whiteouts honoured."""
    paths: set[str] = set()
    with tarfile.open(TAR) as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        for layer in manifest[0]["Layers"]:
            for name in _layer_entries(tar, layer):
                parent, base = name.rpartition("/")[0], name.rpartition("/")[2]
                if base == ".wh..wh..opq":
                    paths = {p for p in paths if not p.startswith(parent + "/")}
                elif base.startswith(".wh."):
                    gone = f"{parent}/{base[4:]}".lstrip("/")
                    paths = {p for p in paths if p != gone and not p.startswith(gone + "/")}
                else:
                    paths.add(name)
    return paths


def test_the_tar_is_tagged_with_the_release_version_and_runs_iotsec_as_10001(image):
    manifest, config = image
    assert manifest[0]["RepoTags"] == [REF], "one tag, the pyproject version, never latest"
    settings = config["config"]
    assert settings["User"] == "10001:10001"
    assert settings["Entrypoint"] == ["iotsec"]
    path = next(e for e in settings["Env"] if e.startswith("PATH="))
    assert path.startswith("PATH=/opt/iotsec/bin:")
    assert not [e for e in settings["Env"] if e.split("=")[0] in BUILD_SETTINGS], "no build settings in the image"


def test_the_filesystem_has_restic_and_the_venv_but_no_compiler_pip_or_pip_cache(image):
    paths = final_paths()
    assert "usr/bin/restic" in paths
    assert "opt/iotsec/bin/iotsec" in paths
    assert "etc/ssl/certs/ca-certificates.crt" in paths
    compilers = {"usr/bin/gcc", "usr/bin/cc", "usr/bin/x86_64-linux-gnu-gcc-12", "usr/bin/make"} & paths
    assert not compilers, compilers
    assert not [p for p in paths if p.startswith("opt/iotsec/bin/pip")], "the venv carries no pip"
    assert not [p for p in paths if "/.cache/pip" in f"/{p}" or p.startswith("wheels/")], "no pip cache or wheels"
    assert "usr/bin/ssh" in paths, "restic's sftp: targets need an ssh client"
    assert "usr/sbin/sshd" not in paths, "a client, never a server"
    apt_leftovers = [
        p
        for p in paths
        if p.startswith(("var/cache/apt/", "var/lib/apt/lists/")) and p.endswith((".bin", ".deb", "_Packages"))
    ]
    assert not apt_leftovers, f"no package cache in the image: {apt_leftovers[:5]}"


@pytest.fixture(scope="module")
def container(image) -> Iterator[str]:
    """A buildah working container made from the tar itself (not from buildah's storage)."""
    if shutil.which("buildah") is None:
        _missing("no buildah (apt-get install buildah)")
    made = subprocess.run(
        ["buildah", "from", "-q", f"docker-archive:{TAR}"], capture_output=True, text=True, timeout=300, check=True
    )
    name = made.stdout.strip().splitlines()[-1]
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True, timeout=60, check=False)


def run_as_image_user(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    volume = f"{ROOT / 'examples'}:/examples:ro"
    return subprocess.run(
        ["buildah", "run", "--network", "none", "--user", "10001:10001", "-v", volume, container, "--", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("iotsec", "--version"), f"iotsec {VERSION}"),
        (("iotsec", "backup", "run", "-h"), "--config CONFIG.json"),
        (("restic", "version"), "restic "),
        (("id", "-u"), "10001"),
    ],
)
def test_the_image_runs_its_commands_as_10001(container, command, expected):
    done = run_as_image_user(container, *command)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


def test_the_image_validates_the_examples_and_imports_every_module(container):
    done = run_as_image_user(container, "iotsec", "validate", "/examples")
    assert done.returncode == 0, done.stdout + done.stderr
    walk = (
        "import importlib, pkgutil, iotsec\n"
        "names = [m.name for m in pkgutil.walk_packages(iotsec.__path__, 'iotsec.') if not m.name.endswith('__main__')]\n"
        "[importlib.import_module(n) for n in names]\n"
        "print(len(names))\n"
    )
    imported = run_as_image_user(container, "python3", "-c", walk)
    assert imported.returncode == 0, imported.stderr
    assert int(imported.stdout) > 50
