"""Container image references: registry, repository, tag and digest, as the container runtime reads them.

Normalisation follows the reference grammar of the distribution project (`github.com/distribution/reference`,
`ParseNormalizedNamed`, which docker and containerd both use):

- the first path component is a registry host only if it contains `.` or `:`, is `localhost`, or has an upper-case
  letter; otherwise the image lives on Docker Hub (`eclipse/mosquitto` is `docker.io/eclipse/mosquitto`);
- `index.docker.io` (Docker Hub's legacy name) is `docker.io`, and a one-component Hub name is an official image
  under `library/` (`nginx` is `docker.io/library/nginx`);
- repository paths are lower case, tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, a digest is `algorithm:hex`.

Two choices go beyond the runtime, both only ever widening a match to the same server: registry hosts compare
case-insensitively (DNS names do), and `registry-1.docker.io`, the host Docker Hub's registry API actually answers
on, counts as `docker.io` (the runtime keeps it a distinct name, yet it serves the same repositories).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_REGISTRY = "docker.io"
REGISTRY_ALIASES = {"index.docker.io": DEFAULT_REGISTRY, "registry-1.docker.io": DEFAULT_REGISTRY}
OFFICIAL_PREFIX = "library/"
MAX_NAME = 255  # the reference grammar's limit on registry/repository
MAX_REFERENCE = 4096  # anything longer is not echoed back whole

_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^\w[\w.-]{0,127}$", re.ASCII)
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}  # the algorithms go-digest verifies
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference. `problem` says why a runtime could not pull it (registry and repository are then '')."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None
    written: str = ""  # the name as the manifest wrote it, without tag and digest (for fixes the reader recognises)
    problem: str | None = None

    @property
    def location(self) -> str:
        return f"{self.registry}/{self.repository}"

    def from_registry(self, allowed: str) -> bool:
        """Whether the image lives under `allowed` (a registry host, optionally with a path prefix), both sides
        normalised alike: `docker.io/eclipse` covers `index.docker.io/eclipse/x` and `eclipse/x`."""
        if self.problem is not None:
            return False
        prefix, location = normalise_location(allowed), self.location
        return location == prefix or location.startswith(prefix + "/")


@lru_cache(maxsize=1024)  # a domain's few allowedRegistries, normalised on every container of every review
def normalise_location(allowed: str) -> str:
    """An allowedRegistries entry (host[/path prefix]) in the form `ImageRef.location` has.

    A first component that is no host (no `.` or `:`, not `localhost`) is a Docker Hub namespace, as the runtime
    reads `eclipse/x`; no `library/` is added, because an entry is a prefix (`docker.io/eclipse` is the eclipse
    namespace; official images are `docker.io/library`)."""
    entry = allowed.strip().rstrip("/")
    first, slash, rest = entry.partition("/")
    if _is_host(first, entry):
        host = _host(first)
        return f"{host}/{rest}" if slash else host
    return f"{DEFAULT_REGISTRY}/{entry}"


def _is_host(first: str, name: str) -> bool:
    if "/" not in name and first == name and ("." in first or ":" in first or first == "localhost"):
        return True  # an allowedRegistries entry may be a bare host
    return "/" in name and ("." in first or ":" in first or first == "localhost" or first.lower() != first)


def _host(host: str) -> str:
    host = host.lower()
    return REGISTRY_ALIASES.get(host, host)


def parse_image(image: str) -> ImageRef:
    """The reference as the runtime normalises it; never raises (an unpullable reference carries a problem)."""
    if not image:
        return _invalid("", "no image is given")
    if len(image) > MAX_REFERENCE:  # checked before the cache, which must not keep megabytes per entry
        return _invalid("", f"the reference is {len(image)} characters long")
    return _parse(image)


@lru_cache(maxsize=4096)
def _parse(image: str) -> ImageRef:
    if image != image.strip():
        return _invalid(image, "it has leading or trailing spaces")
    name_tag, at, digest = image.partition("@")
    if at and not _valid_digest(digest):
        return _invalid(image, f"the digest {_short(digest)!r} is not algorithm:hex (sha256: takes 64 lowercase hex)")
    last = name_tag.rsplit("/", 1)[-1]
    name, colon, tag = name_tag.rpartition(":") if ":" in last else (name_tag, "", "")
    if colon and not _TAG.match(tag):
        return _invalid(image, f"the tag {_short(tag)!r} is not a valid tag")
    return _located(image, name, tag or None, digest or None)


def _located(image: str, name: str, tag: str | None, digest: str | None) -> ImageRef:
    if _HEX64.match(name):
        return _invalid(image, "a 64-character hex name is an image ID, not a repository")
    first, slash, rest = name.partition("/")
    if slash and _is_host(first, name):
        if not _HOST.match(first):
            return _invalid(image, f"{_short(first)!r} is not a registry host")
        registry, path = _host(first), rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    if path != path.lower():
        return _invalid(image, "the repository name must be lowercase")
    if not path or not all(_PATH_COMPONENT.match(part) for part in path.split("/")):
        return _invalid(image, f"{_short(path)!r} is not a valid repository path")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if len(registry) + 1 + len(path) > MAX_NAME:
        return _invalid(image, f"the name is longer than {MAX_NAME} characters")
    return ImageRef(registry, path, tag, digest, name)


def _valid_digest(digest: str) -> bool:
    algorithm, colon, encoded = digest.partition(":")
    length = _DIGEST_LENGTHS.get(algorithm)
    return bool(colon) and length == len(encoded) and all(c in "0123456789abcdef" for c in encoded)


def _invalid(image: str, problem: str) -> ImageRef:
    return ImageRef("", "", None, None, _short(image), problem)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- pinning


_FULL_VERSION = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9]*[-_.])*"  # an optional word prefix: release-, java17-
    r"v?\d+\.\d+\.\d+(?:\.\d+)*"  # major.minor.patch, maybe more parts
    r"(?:[-_.][\w.-]*|[A-Za-z][\w.-]*)?$",  # a variant or build suffix: -alpine, -debian-12-r3, _9, rc1
    re.ASCII,
)
_DATED = re.compile(
    r"(?<!\d)(?:19|20)\d\d(?:(?P<sep>[-.])(?:0[1-9]|1[0-2])(?P=sep)(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:\d{4}|\d{6})?)(?!\d)"
)
_COMMIT = re.compile(r"(?:^|[-_.])(?:sha-|g)?(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}$")
_RELEASE_LINE = re.compile(r"^v?\d+(?:\.\d+)?$")
PINNING_MODES = ("digest", "version", "any")


def version_tag(tag: str) -> bool:
    """Whether a tag names one release rather than a line of releases (imagePinning: version).

    Accepted:
    - a full version, at least major.minor.patch, with an optional `v`, word prefix and variant suffix:
      `1.25.3`, `v2.0.18`, `2.0.18-alpine`, `16.1.0-debian-12-r3` (bitnami), `17.0.9_9-jdk-jammy`, `1.2.3.4`,
      `1.2.3-rc.1`, `release-1.2.3`; calendar versions of three parts too (`2024.01.15`, home-assistant's
      `2024.1.5`). Semver build metadata (`+build`) cannot occur: `+` is not a legal tag character.
    - a dated build: a full date (`YYYY-MM-DD`, `YYYY.MM.DD`, `YYYYMMDD`, optionally `hhmm[ss]`) anywhere in the
      tag: MinIO's `RELEASE.2024-01-16T16-07-38Z`, ubuntu's `jammy-20240111`, CloudNativePG's
      `16.1-202401151200-standard-bookworm`.
    - a commit: 7 to 40 hex digits (with a digit and a letter) ending the tag: `sha-3f9c2a1`, `main-3f9c2a1e`.

    Refused as floating: release lines (`12`, `8.0`, `v1`, `1.35`, `16-alpine`, `8.0-alpine3.19`), channels and
    variants (`stable`, `lts`, `alpine`, `bookworm`, `edge`, `nightly`) and `latest`.

    A version tag fixes the application's version, not the bytes: publishers rebuild `1.25.3` or
    `16.1.0-debian-12` when the base image is patched (bitnami calls those rolling; only `-rN` stays put). A
    zone that must not change at all pins digests (imagePinning: digest).
    """
    return bool(_FULL_VERSION.match(tag) or _DATED.search(tag) or _COMMIT.search(tag))


def pinning_problem(ref: ImageRef, mode: str) -> str | None:
    """Why the reference does not satisfy the pinning mode (digest, version or any), or None. A digest satisfies
    every mode: the runtime pulls by digest and ignores a tag written next to it."""
    if ref.digest is not None:
        return None
    if ref.tag is None:
        return "no tag (means latest, which moves)"
    if ref.tag.lower() == "latest":
        return "tag latest moves"
    if mode == "any":
        return None
    if mode == "digest":
        return f"no digest (tag {_short(ref.tag, 40)!r} can be moved)"
    if version_tag(ref.tag):
        return None
    if _RELEASE_LINE.match(ref.tag):
        return f"tag {ref.tag!r} is not a full major.minor.patch version"
    if not any(c.isdigit() for c in ref.tag):
        return f"tag {_short(ref.tag, 40)!r} is a moving channel or variant name"
    return f"tag {_short(ref.tag, 40)!r} is no full version (major.minor.patch), dated build or commit"


def pinned_forms(ref: ImageRef, mode: str) -> str:
    """The fix: concrete pinned forms of the image. The digest form `name:tag@sha256:<digest>` always works (the
    tag stays as a note for readers; the runtime pulls the digest); version mode also offers a full version built
    from the tag the manifest has (`postgres:12` → `postgres:12.<minor>.<patch>`), where the project publishes one."""
    tagged = f"{ref.written}:{ref.tag}" if ref.tag and ref.tag.lower() != "latest" else ref.written
    by_digest = f"{_short(tagged, 120)}@sha256:<digest>"
    if mode == "digest":
        return f"pin it by digest: {by_digest}"
    if mode == "version":
        return f"pin {by_digest} or a full version tag {_short(ref.written, 100)}:{_version_hint(ref.tag)}"
    return f"pin {by_digest} or a version tag {_short(ref.written, 100)}:<version>"


def _version_hint(tag: str | None) -> str:
    if tag and _RELEASE_LINE.match(tag):
        parts = tag.count(".") + 1
        return tag + ".<minor>.<patch>"[len(".<minor>") if parts == 2 else 0 :]
    return "<major>.<minor>.<patch>"
