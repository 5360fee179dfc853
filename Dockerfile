# One image for every iotsec command: the operator (`iotsec run`), the webhook (`iotsec webhook`), the CLI, and
# the backup jobs (restic is included).
#   With a registry:    docker build -t registry.example.com/iotsec/iotsec:0.1.0 .
#   Without a registry: make image   (tools/build_image.sh: a Debian base made locally, Debian's buildah)
# BASE is any Debian bookworm image with python3 >= 3.11: the official python image (default) or a plain Debian
# one (python3 from Debian, PEP 668: everything goes into the venv /opt/iotsec, never into the system Python).
# Build-time settings, none of them kept in the image (ARGs of the build stage, secret mounts):
#   --build-arg PIP_INDEX_URL=... / PIP_EXTRA_INDEX_URL=... / PIP_TRUSTED_HOST=...   a PyPI mirror
#   --build-arg APT_MIRROR=http://mirror/debian                                      a Debian mirror
#   --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt                     a CA bundle for pip (a TLS proxy)
# No `# syntax=` line: it makes BuildKit pull a frontend image from a registry; the built-in one reads this file.
ARG BASE=python:3.11.14-slim-bookworm

# ---- build: the venv with iotsec and its dependencies (pip and its caches stay in this stage)
FROM ${BASE} AS build
ARG APT_MIRROR=""
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# APT_MIRROR becomes a sources list under /apt of this stage; the runtime stage bind-mounts it from here, so the
# mirror never reaches the final image, not even its history. Without it apt uses the base's own sources.
RUN mkdir /apt && if [ -n "$APT_MIRROR" ]; then echo "deb $APT_MIRROR bookworm main" > /apt/sources.list; fi
# Debian's python3 has no ensurepip without python3-venv; the python image has it built in.
RUN python3 -c 'import ensurepip' 2>/dev/null || { \
      set -e; \
      [ ! -s /apt/sources.list ] || set -- -o Dir::Etc::SourceList=/apt/sources.list -o Dir::Etc::SourceParts=/dev/null; \
      apt-get "$@" update; \
      apt-get "$@" install -y --no-install-recommends python3-venv; \
      apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; } \
 && python3 -m venv /opt/iotsec
WORKDIR /src
# The dependencies first, from pyproject.toml alone: a code change does not download them again.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/iotsec/bin/pip install --only-binary=:all: -r /tmp/requirements.txt
COPY README.md ./
COPY operator ./operator
# iotsec itself: pure Python, built from source; the venv then loses pip, setuptools and wheel.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && /opt/iotsec/bin/pip install --no-deps . \
 && /opt/iotsec/bin/pip check \
 && /opt/iotsec/bin/pip uninstall -y pip setuptools wheel

# ---- runtime: the venv, restic, an ssh client (restic's sftp: targets), a non-root user; no compilers, no pip
# cache, no build settings
FROM ${BASE}
RUN --mount=type=bind,from=build,source=/apt,target=/run/apt \
    command -v restic >/dev/null && command -v ssh >/dev/null && [ -s /etc/ssl/certs/ca-certificates.crt ] || { \
      set -e; \
      [ ! -s /run/apt/sources.list ] || set -- -o Dir::Etc::SourceList=/run/apt/sources.list -o Dir::Etc::SourceParts=/dev/null; \
      apt-get "$@" update; \
      apt-get "$@" install -y --no-install-recommends restic ca-certificates openssh-client; \
      apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; } \
 && groupadd --system --gid 10001 iotsec \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin iotsec
COPY --from=build /opt/iotsec /opt/iotsec
ENV PATH=/opt/iotsec/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["iotsec"]
CMD ["--help"]
