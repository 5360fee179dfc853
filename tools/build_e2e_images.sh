#!/usr/bin/env bash
# make e2e-images: the images the deployed tests run besides iotsec's own, built like `make image` does (Debian's
# buildah on the testenv's local Debian base, no registry) and imported into the test node's containerd.
#   localhost/iotsec/e2e-sshd:1   Debian's openssh-server as UID 10001: the sftp backup target (tests/e2e/images/)
# Needs the testenv's images/debian.tar (the node's images.sh makes it). Prints the references, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "e2e-images: $*" >&2; }
die() { echo "e2e-images: ERROR: $*" >&2; exit 1; }
TESTENV=${IOTSEC_TESTENV:-/var/cache/iotsec-testenv}
BASE=localhost/testenv/debian:bookworm
SOCK=${CONTAINERD_SOCK:-/run/containerd/containerd.sock}
REF=localhost/iotsec/e2e-sshd:1
OUT=build/e2e-sshd.tar
command -v buildah >/dev/null || die "buildah is missing: run make image first (it installs it)"
mkdir -p build
if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  [ -s "$TESTENV/images/debian.tar" ] || die "no $BASE: start the testenv's node once (images.sh makes it)"
  buildah pull -q "docker-archive:$TESTENV/images/debian.tar" >/dev/null
fi
start=$(date +%s)
if ! timeout 900 buildah bud --layers --pull=never --network host --build-arg "BASE=$BASE" \
    -f tests/e2e/images/sshd.Containerfile -t "$REF" tests/e2e/images >build/e2e-sshd-build.log 2>&1; then
  tail -15 build/e2e-sshd-build.log >&2; die "buildah bud failed (log: build/e2e-sshd-build.log)"
fi
rm -f "$OUT"
buildah push -q "$REF" "docker-archive:$OUT:$REF" >/dev/null
say "built $REF in $(( $(date +%s) - start ))s"
if [ "${IMPORT:-1}" = 1 ] && [ -S "$SOCK" ]; then
  for attempt in 1 2 3; do  # as build_image.sh: containerd's GC may race an import under a reused tag
    if ctr -n k8s.io -a "$SOCK" images import "$OUT" >build/ctr-import-e2e.log 2>&1; then break; fi
    [ "$attempt" -lt 3 ] || { tail -3 build/ctr-import-e2e.log >&2; die "ctr import of $OUT failed 3 times"; }
    sleep 5
  done
  say "imported into the node's containerd"
fi
echo "$REF"
