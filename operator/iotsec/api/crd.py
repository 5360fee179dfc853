"""Generate CustomResourceDefinitions from the API models (the models are the single source of truth).

Pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: no `$ref`, no
`anyOf` for optional fields, no `additionalProperties: false`, no titles or examples, and object
defaults that the server can expand. This module performs exactly that translation.
"""

from __future__ import annotations

import copy
from typing import Any

from iotsec.api.common import GROUP, VERSION
from iotsec.api.kinds import KINDS, KindInfo

Schema = dict[str, Any]

_DROPPED_KEYS = {"title", "examples", "$defs"}
_CATEGORY = "iotsec"


def structural_schema(model: type, *, keep_defaults: bool = True) -> Schema:
    """The Kubernetes structural schema of a pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    return _convert(raw, raw.get("$defs", {}), keep_defaults)


def _convert(node: Schema, defs: dict[str, Schema], keep_defaults: bool) -> Schema:
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        return _merge(_convert(target, defs, keep_defaults), _convert(node, defs, keep_defaults))
    for combinator in ("anyOf", "allOf"):
        if combinator in node:
            branches = [b for b in node.pop(combinator) if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"unions cannot be expressed in a structural schema: {branches}")
            if node.get("default", ...) is None:
                node.pop("default")
            return _merge(_convert(branches[0], defs, keep_defaults), _convert(node, defs, keep_defaults))

    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "additionalProperties" and value is False):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, keep_defaults) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value, defs, keep_defaults)
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            if keep_defaults and value is not None:
                out[key] = _expandable_default(value)
        else:
            out[key] = copy.deepcopy(value)
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return out


def _expandable_default(value: Any) -> Any:
    """Object defaults become `{}`: the server then applies the nested fields' own defaults."""
    return {} if isinstance(value, dict) else copy.deepcopy(value)


def _merge(base: Schema, overlay: Schema) -> Schema:
    merged = dict(base)
    for key, value in overlay.items():
        if key == "x-kubernetes-validations":
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
    return merged


def resource_schema(info: KindInfo) -> Schema:
    """The full openAPIV3Schema of one kind (apiVersion, kind, metadata, spec, status)."""
    return {
        "type": "object",
        "description": f"{info.kind}: {info.summary}",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "iotsec.io/v1alpha1"},
            "kind": {"type": "string", "description": info.kind},
            "metadata": {"type": "object"},
            "spec": structural_schema(info.spec),
            "status": structural_schema(info.status, keep_defaults=False),
        },
    }


def crd_manifest(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition for one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/name": "iotsec", "app.kubernetes.io/part-of": "iotsec"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced" if info.namespaced else "Cluster",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": [info.short_name],
                "categories": [_CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [column.manifest() for column in info.columns],
                    "schema": {"openAPIV3Schema": resource_schema(info)},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd_manifest(info) for info in KINDS]


def crd_filename(info: KindInfo) -> str:
    return f"{GROUP}_{info.plural}.yaml"
