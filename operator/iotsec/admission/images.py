"""Container image references: registry, repository, tag and digest, as the container runtime reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_REGISTRY = "docker.io"
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def from_registry(self, allowed: str) -> bool:
        """Whether the image lives under `allowed` (a registry host, optionally with a path prefix)."""
        location = f"{self.registry}/{self.repository}"
        allowed = allowed.rstrip("/")
        return location == allowed or location.startswith(allowed + "/")


@lru_cache(maxsize=4096)
def parse_image(image: str) -> ImageRef:
    name, _, digest = image.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    repository, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return ImageRef(registry, repository, tag or None, digest if digest and _DIGEST.match(digest) else None)
