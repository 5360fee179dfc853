#!/usr/bin/env bash
# make image: build iotsec's image from the Dockerfile on this machine, without any container registry, write it to
# build/iotsec-image.tar (docker-archive) and import it into the test node's containerd when that is running.
#
# Why buildah: it is in Debian (apt-get install buildah), builds the Dockerfile as it is (multi-stage, ARG, secret
# mounts), needs no daemon, and writes a docker-archive that `ctr images import` reads. podman would add a daemon-less
# runtime stack (conmon, netavark) this script does not need: `buildah run` is enough for the smoke test.
# Why a local Debian base: no registry is reachable, so python:3.11.14-slim-bookworm cannot be pulled. The base is
# the test node's own localhost/testenv/debian:bookworm (debootstrap minbase + python3, restic, ca-certificates),
# loaded from the testenv's cache when images.sh made it (the node's containerd then already holds that layer and
# imports only iotsec's), otherwise localhost/iotsec/debian-base:bookworm, debootstrapped here with the same
# packages. BASE=python:3.11.14-slim-bookworm uses the official base instead when it is in buildah's storage (e.g.
# `buildah pull` where a registry is reachable).
#
# Steps: 1 buildah, debootstrap (installed with apt when missing and root)  2 the base  3 buildah bud (layers cached)
# 4 push to the tar, checked (user 10001, entrypoint iotsec, tag not latest, no build settings in Env)
# 5 smoke run as UID 10001 (iotsec --version, backup run -h, restic version, validate examples/)  6 ctr import.
# Idempotent: each step reuses what exists; a rebuild with nothing changed takes seconds. Progress goes to stderr,
# the image reference alone to stdout: REF=$(tools/build_image.sh).
# Env: BASE, IOTSEC_TESTENV, DEBIAN_MIRROR, APT_MIRROR, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST,
# CA_BUNDLE (for pip, default: the machine's bundle), CONTAINERD_SOCK, IMPORT=0 (skip import), SMOKE=0 (skip run),
# BUILD_TIMEOUT (s, default 1800).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "image: $*" >&2; }  # progress on stderr: stdout is the image reference alone
die() { echo "image: ERROR: $*" >&2; exit 1; }

VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])') \
  || die "cannot read the version from pyproject.toml"
[[ $VERSION =~ ^[0-9][0-9A-Za-z.+-]*$ ]] || die "version '$VERSION' from pyproject.toml is not a release version"
REF=localhost/iotsec/iotsec:$VERSION
OUT=build/iotsec-image.tar
TESTENV=${IOTSEC_TESTENV:-/var/cache/iotsec-testenv}
TESTENV_BASE=localhost/testenv/debian:bookworm
OWN_BASE=localhost/iotsec/debian-base:bookworm
SOCK=${CONTAINERD_SOCK:-/run/containerd/containerd.sock}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
T=${BUILD_TIMEOUT:-1800}
mkdir -p build

# ---------------------------------------------------------------- 1 buildah
missing=$(for tool in buildah debootstrap; do command -v "$tool" >/dev/null || echo "$tool"; done)
if [ -n "$missing" ]; then
  packages="$(echo $missing) runc"
  [ "$(id -u)" = 0 ] || die "missing: sudo apt-get install -y --no-install-recommends $packages"
  say "installing Debian's $packages (apt)"
  { timeout 300 apt-get -o DPkg::Lock::Timeout=300 update -qq \
      && timeout 600 apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends $packages; } >build/apt.log 2>&1 \
    || { tail -5 build/apt.log >&2; die "apt-get install $packages failed (log: build/apt.log)"; }
fi
has_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- 2 the base
make_debian_base() {
  local mirror ctr mnt start
  mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
  [ -n "$mirror" ] || mirror=$(grep -m1 -oE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true)
  [ -n "$mirror" ] || die "no Debian mirror in the apt sources; set DEBIAN_MIRROR"
  say "debootstrapping $OWN_BASE from $mirror (minbase + python3, restic, ca-certificates; ~1 min)"
  start=$(date +%s)
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  if ! timeout 900 debootstrap --variant=minbase --include=python3,restic,ca-certificates bookworm "$mnt" "$mirror" \
      >build/debootstrap.log 2>&1; then
    buildah rm "$ctr" >/dev/null; tail -5 build/debootstrap.log >&2; die "debootstrap failed (log: build/debootstrap.log)"
  fi
  rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/* "$mnt"/tmp/*
  buildah umount "$ctr" >/dev/null
  buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --rm -q "$ctr" "$OWN_BASE" >/dev/null
  say "base made in $(( $(date +%s) - start ))s"
}

archive_id() {  # the image id a docker-archive holds (its config's digest); images.sh writes ./-prefixed names
  python3 - "$1" <<'PY'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    name = next(n for n in tar.getnames() if n.removeprefix("./") == "manifest.json")
    print(json.load(tar.extractfile(name))[0]["Config"].removeprefix("./").removesuffix(".json"))
PY
}
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }

if [ -n "${BASE:-}" ]; then
  has_image "$BASE" || die "BASE=$BASE is not in buildah's storage (no registry here: buildah pull it where one is reachable)"
elif [ -s "$TESTENV/images/debian.tar" ]; then
  BASE=$TESTENV_BASE
  if [ "$(image_id "$BASE")" != "$(archive_id "$TESTENV/images/debian.tar")" ]; then
    say "loading $BASE from $TESTENV/images/debian.tar (made by the testenv's images.sh)"
    buildah pull -q "docker-archive:$TESTENV/images/debian.tar" >/dev/null || die "cannot load $TESTENV/images/debian.tar"
  fi
else
  BASE=$OWN_BASE
  has_image "$BASE" || make_debian_base
fi
say "base $BASE"

# ---------------------------------------------------------------- 3 build
args=(--build-arg "BASE=$BASE")
for name in APT_MIRROR PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
  [ -z "${!name:-}" ] || args+=(--build-arg "$name=${!name}")
done
[ ! -s "$CA_BUNDLE" ] || args+=(--secret "id=ca-bundle,src=$CA_BUNDLE")
start=$(date +%s)
say "building $REF (log: build/image-build.log)"
# --network host: RUN steps resolve and reach PyPI and the Debian mirror as this machine does; --pull=never: the
# base must be local, a registry lookup would only time out.
if ! timeout "$T" buildah bud --layers --force-rm --pull=never --network host "${args[@]}" -f Dockerfile -t "$REF" . \
    >build/image-build.log 2>&1; then
  tail -15 build/image-build.log >&2
  die "buildah bud failed (log: build/image-build.log)"
fi
say "built in $(( $(date +%s) - start ))s"

# ---------------------------------------------------------------- 4 the tar
id=$(buildah inspect --type image --format '{{.FromImageID}}' "$REF")
if [ -s "$OUT" ] && [ "$(cat build/iotsec-image.id 2>/dev/null)" = "$id" ]; then
  say "$OUT is already this image (${id:0:12})"
else
  rm -f "$OUT.tmp"
  timeout 600 buildah push -q "$REF" "docker-archive:$OUT.tmp:$REF" >/dev/null || die "buildah push to $OUT failed"
  mv "$OUT.tmp" "$OUT"
  previous=$(cat build/iotsec-image.id 2>/dev/null || true)
  echo "$id" >build/iotsec-image.id
  # the image this one replaces is untagged now: drop it, or every code change would keep a full venv layer
  if [ -n "$previous" ] && [ "$previous" != "$id" ] \
     && buildah images --noheading --format '{{.ID}} {{.Name}}' \
        | awk -v id="${previous:0:12}" '$1 == id && $2 == "<none>" {found = 1} END {exit !found}'; then
    buildah rmi "$previous" >/dev/null 2>&1 || true
  fi
fi
python3 - "$OUT" "$REF" <<'PY' || die "$OUT does not hold the image it should"
import json, sys, tarfile
path, ref = sys.argv[1:]
with tarfile.open(path) as tar:
    manifest = json.load(tar.extractfile("manifest.json"))
    config = json.load(tar.extractfile(manifest[0]["Config"]))["config"]
tags = manifest[0]["RepoTags"]
problems = [f"tags {tags} are not [{ref}]"] if tags != [ref] or any(t.endswith(":latest") for t in tags) else []
if config.get("User") != "10001:10001":
    problems.append(f"user is {config.get('User')!r}, not 10001:10001")
if config.get("Entrypoint") != ["iotsec"]:
    problems.append(f"entrypoint is {config.get('Entrypoint')}, not ['iotsec']")
leaked = [e for e in config.get("Env", []) if e.split("=")[0] in {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "APT_MIRROR"}]
if leaked:
    problems.append(f"build settings in the image's Env: {leaked}")
for p in problems:
    print("image: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
say "$OUT $(du -h "$OUT" | cut -f1) (image ${id:0:12}, user 10001, entrypoint iotsec)"

# ---------------------------------------------------------------- 5 smoke run, as the image's user
if [ "${SMOKE:-1}" = 1 ]; then
  ctr=$(buildah from -q --pull=never "$REF")
  trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  run() { timeout 120 buildah run --network none --user 10001:10001 -v "$PWD/examples:/examples:ro" "$ctr" -- "$@"; }
  run iotsec --version >build/image-smoke.log 2>&1 \
    && run iotsec backup run -h >>build/image-smoke.log 2>&1 \
    && run restic version >>build/image-smoke.log 2>&1 \
    && run iotsec validate /examples >>build/image-smoke.log 2>&1 \
    || { tail -15 build/image-smoke.log >&2; die "smoke run failed (log: build/image-smoke.log)"; }
  say "smoke run as 10001: $(head -1 build/image-smoke.log); $(grep -m1 '^restic' build/image-smoke.log); validate examples/ ok"
fi

# ---------------------------------------------------------------- 6 import into the node's containerd
if [ "${IMPORT:-1}" != 1 ]; then
  say "IMPORT=0: not imported"
elif [ -S "$SOCK" ] && timeout 10 ctr -a "$SOCK" version >/dev/null 2>&1; then
  in_containerd() { timeout 30 ctr -n k8s.io -a "$SOCK" images ls | awk -v ref="$REF" '$1 == ref {print $3}'; }
  imported="$id $SOCK $(in_containerd)"
  if [ "$(cat build/iotsec-image.imported 2>/dev/null)" = "$imported" ]; then
    say "already in containerd ($SOCK, namespace k8s.io)"
  else
    # containerd's garbage collector may remove a snapshot of the image this one replaces under the same tag while
    # the import unpacks onto it ("parent snapshot ... does not exist", seen once in CI): try again, at most twice.
    for attempt in 1 2 3; do
      if timeout 300 ctr -n k8s.io -a "$SOCK" images import "$OUT" >build/ctr-import.log 2>&1; then break; fi
      [ "$attempt" -lt 3 ] || { tail -3 build/ctr-import.log >&2; die "ctr images import $OUT failed 3 times"; }
      say "ctr images import failed ($(tail -1 build/ctr-import.log | cut -c1-160)); trying again"
      sleep 5
    done
    digest=$(in_containerd)
    [ -n "$digest" ] || die "$REF is not in containerd after the import"
    echo "$id $SOCK $digest" >build/iotsec-image.imported
    say "imported into containerd ($SOCK, namespace k8s.io, ${digest:0:19})"
  fi
else
  say "the node's containerd is not running ($SOCK): not imported; after node-start.sh run: make image"
fi
echo "$REF"
