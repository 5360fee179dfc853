"""Helpers of tests/e2e/test_examples_live.py: the examples applied to a live cluster, the operator's log read,
`iotsec render` compared with what the operator applied."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from iotsec.build.tenant import PLACEHOLDER
from iotsec.cli.main import main as iotsec_main
from iotsec.model.labels import DOMAIN_LABEL, MANAGED_BY, MANAGER, OWNER_KIND, OWNER_NAME, TENANT_LABEL
from iotsec.model.platform import GRANT_OWNER_KIND

GROUP, VERSION = "iotsec.io", "v1alpha1"
PLURALS = {
    "SecurityDomain": "securitydomains",
    "TenantIsolation": "tenantisolations",
    "BackupPolicy": "backuppolicies",
    "AuditPolicy": "auditpolicies",
}
Key = tuple[str, str, str, str]  # apiVersion, kind, namespace ("" when cluster-scoped), name

EXCEPTION_MARKS = ("Traceback", "failed with an exception", "Unhandled exception")
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "ownerReferences",
    "generation",
    "selfLink",
    "finalizers",
)


def documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    return [d for path in paths for d in yaml.safe_load_all(path.read_text()) if d]


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"]


# ---------------------------------------------------------------- custom resources


def cr_args(doc: dict[str, Any]) -> tuple[str, ...]:
    return (
        GROUP,
        VERSION,
        *((doc["metadata"]["namespace"],) if doc["metadata"].get("namespace") else ()),
        PLURALS[doc["kind"]],
        doc["metadata"]["name"],
    )


def read_cr(custom: client.CustomObjectsApi, doc: dict[str, Any]) -> dict[str, Any] | None:
    args = cr_args(doc)
    try:
        if len(args) == 5:
            return custom.get_namespaced_custom_object(*args)
        return custom.get_cluster_custom_object(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def create_cr(custom: client.CustomObjectsApi, doc: dict[str, Any]) -> None:
    args = cr_args(doc)[:-1]
    if len(args) == 4:
        custom.create_namespaced_custom_object(*args, doc)
    else:
        custom.create_cluster_custom_object(*args, doc)


def delete_cr(custom: client.CustomObjectsApi, doc: dict[str, Any], release_finalizers: bool) -> None:
    """Delete; with `release_finalizers` (no operator runs to do it) drop iotsec's finalizer ourselves."""
    args = cr_args(doc)
    namespaced = len(args) == 5
    delete = custom.delete_namespaced_custom_object if namespaced else custom.delete_cluster_custom_object
    patch = custom.patch_namespaced_custom_object if namespaced else custom.patch_cluster_custom_object
    try:
        delete(*args)
        if release_finalizers:
            patch(*args, {"metadata": {"finalizers": None}})
    except ApiException as exc:
        if exc.status != 404:
            raise


def nulls_empty_strings(custom: client.CustomObjectsApi) -> bool:
    """Whether this API server stores "" in a custom resource's string list as null (and so refuses it): the
    k8s-testenv 1.20 server does, for kubectl as for any client."""
    probe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TenantIsolation",
        "metadata": {"name": "empty-string-probe"},
        "spec": {
            "tenantID": "probe",
            "securityDomain": "probe",
            "namespaces": ["probe"],
            "applicationClasses": [
                {"name": "c", "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
            ],
        },
    }
    try:
        custom.create_cluster_custom_object(GROUP, VERSION, PLURALS["TenantIsolation"], probe, dry_run="All")
    except ApiException as exc:
        if exc.status == 422 and "apiGroups" in str(exc) and "null" in str(exc):
            return True
        raise
    return False


def without_empty_api_groups(paths: Iterable[Path], folder: Path) -> list[Path]:
    """Copies of `paths` in `folder` whose RBAC rules name the group "apps" where they named the core group ""."""

    def replaced(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [g or "apps" for g in v] if k == "apiGroups" else replaced(v) for k, v in value.items()}
        if isinstance(value, list):
            return [replaced(item) for item in value]
        return value

    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        copy = folder / path.name
        copy.write_text(yaml.safe_dump_all([replaced(d) for d in documents([path])], sort_keys=False))
        copies.append(copy)
    return copies


def ready_condition(body: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def wait_until(check: Any, timeout: float, interval: float = 0.2) -> tuple[bool, float]:
    """Poll `check` until truthy; (reached, seconds taken)."""
    start = time.monotonic()
    while True:
        if check():
            return True, time.monotonic() - start
        if time.monotonic() - start > timeout:
            return False, time.monotonic() - start
        time.sleep(interval)


# ---------------------------------------------------------------- operator log


def exception_lines(log: str) -> list[str]:
    """Lines that show a handler failing with an exception (kopf's own wording, or a traceback)."""
    return [line for line in log.splitlines() if any(mark in line for mark in EXCEPTION_MARKS)]


def reconcile_lines(log: str, kind: str, name: str, namespace: str | None) -> list[str]:
    """The one line each reconcile logs: kopf's object logger prefixes `[ns/name]`, the namespace-event path
    `Kind ns/name:`."""
    who = f"{namespace}/{name}" if namespace else name
    pattern = re.compile(rf"(\[{re.escape(who)}\] |{kind} {re.escape(who)}: )reconciled \(")
    return [line for line in log.splitlines() if pattern.search(line)]


# ---------------------------------------------------------------- render and the live cluster


def render(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """`iotsec render PATHS` through the command line's own entry point."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):  # notes: not compared
        code = iotsec_main(["render", *map(str, paths)])
    assert code == 0, f"iotsec render exited {code}"
    return [d for d in yaml.safe_load_all(out.getvalue()) if d]


def merged_by_key(objects: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Render gives a namespace once per writer (its domain's labels, its tenant's labels): one object per key."""
    merged: dict[Key, dict[str, Any]] = {}
    for obj in objects:
        key = key_of(obj)
        if key in merged and obj["kind"] == "Namespace":
            labels = {**merged[key]["metadata"].get("labels", {}), **obj["metadata"].get("labels", {})}
            merged[key] = {**merged[key], "metadata": {**merged[key]["metadata"], "labels": labels}}
        else:
            assert key not in merged, f"render gives {key} twice"
            merged[key] = obj
    return merged


_dynamic: dict[int, DynamicClient] = {}


def get(api_client: client.ApiClient, path: str, **query: str) -> dict[str, Any]:
    """A GET of the API server's JSON; raises DynamicApiError (status 404 for an unserved path)."""
    dynamic = (
        _dynamic.setdefault(id(api_client), DynamicClient(api_client))
        if id(api_client) not in _dynamic
        else _dynamic[id(api_client)]
    )
    response = dynamic.request("get", path, query_params=list(query.items()), serialize=False)
    return json.loads(response.data)


def served_resources(api_client: client.ApiClient) -> list[tuple[str, str, bool]]:
    """(apiVersion, plural, namespaced) of every listable resource in each group's preferred version."""
    versions = ["v1"]
    versions += [g["preferredVersion"]["groupVersion"] for g in get(api_client, "/apis")["groups"]]
    found = []
    for group_version in versions:
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        for resource in get(api_client, path)["resources"]:
            if "/" not in resource["name"] and "list" in resource.get("verbs", ()):
                found.append((group_version, resource["name"], resource["namespaced"]))
    return found


def serves(api_client: client.ApiClient, api_version: str, kind: str) -> bool:
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        listing = get(api_client, path)
    except DynamicApiError as exc:
        if exc.status == 404:
            return False
        raise
    return any(r["kind"] == kind and "/" not in r["name"] for r in listing["resources"])


def live_managed(api_client: client.ApiClient, owners: set[tuple[str, str]]) -> dict[Key, dict[str, Any]]:
    """Every object labelled as iotsec's whose owner labels name one of `owners` (kind, name), of any served kind.

    The operator's own namespace grants (owner kind Platform) are the installation's, not a custom resource's:
    render does not give them and they are left out here."""
    found: dict[Key, dict[str, Any]] = {}
    for group_version, plural, _ in served_resources(api_client):
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        listing = get(api_client, f"{prefix}/{plural}", labelSelector=f"{MANAGED_BY}={MANAGER}")
        for item in listing["items"]:
            labels = item["metadata"].get("labels") or {}
            if labels.get(OWNER_KIND) == GRANT_OWNER_KIND or _made_by_kubernetes(listing["kind"], item):
                continue
            if (labels.get(OWNER_KIND), labels.get(OWNER_NAME)) in owners:
                obj = {"apiVersion": group_version, "kind": listing["kind"].removesuffix("List"), **item}
                found[key_of(obj)] = obj
    return found


def _made_by_kubernetes(list_kind: str, item: dict[str, Any]) -> bool:
    """Objects Kubernetes' own controllers make from iotsec's, copying their labels: a Deployment's ReplicaSets and
    Pods, a Job's Pods, a Service's Endpoints and EndpointSlices. iotsec applies only what they are made from."""
    if list_kind == "EndpointsList":  # named and labelled like its Service, without an owner reference
        return True
    references = item["metadata"].get("ownerReferences") or ()
    return any(r.get("controller") and not r["apiVersion"].startswith(f"{GROUP}/") for r in references)


def live_namespaces(core: client.CoreV1Api, domains: set[str], tenants: set[str]) -> dict[Key, dict[str, Any]]:
    """Namespaces the operator labelled for one of `domains` or `tenants`."""
    found = {}
    for namespace in core.list_namespace().items:
        labels = namespace.metadata.labels or {}
        if labels.get(DOMAIN_LABEL) in domains or labels.get(TENANT_LABEL) in tenants:
            obj = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace.metadata.name, "labels": labels},
            }
            found[key_of(obj)] = obj
    return found


def iotsec_labels(labels: dict[str, str]) -> dict[str, str]:
    """A namespace's labels that iotsec writes (its own keys and the Pod Security modes)."""
    return {k: v for k, v in labels.items() if k.startswith(("iotsec.io/", "pod-security.kubernetes.io/"))}


def differences(rendered: Any, live: Any, path: str = "") -> list[str]:
    """Where `rendered` is not contained in `live`: every field render gives must be there with the same value
    (fields the server adds are allowed); lists must match item for item."""
    if isinstance(rendered, dict) and isinstance(live, dict):
        found = []
        for key, value in rendered.items():
            if key not in live:
                found.append(f"{path}.{key}: rendered {value!r}, live has no such field")
            else:
                found += differences(value, live[key], f"{path}.{key}")
        return found
    if isinstance(rendered, list) and isinstance(live, list):
        if len(rendered) != len(live):
            return [f"{path}: rendered {len(rendered)} items {rendered!r}, live {len(live)} items {live!r}"]
        return [
            d for i, (r, v) in enumerate(zip(rendered, live, strict=True)) for d in differences(r, v, f"{path}[{i}]")
        ]
    if rendered != live:
        return [f"{path}: rendered {rendered!r}, live {live!r}"]
    return []


def _placeholders_matched(rendered: Any, live: Any) -> Any:
    """`rendered` with each value render writes as the placeholder for generated material (a CA bundle, a CRL)
    replaced by the live value at the same place: such a value is compared by its key only."""
    if isinstance(rendered, dict) and isinstance(live, dict):
        return {k: _placeholders_matched(v, live[k]) if k in live else v for k, v in rendered.items()}
    if isinstance(rendered, list) and isinstance(live, list) and len(rendered) == len(live):
        return [_placeholders_matched(r, v) for r, v in zip(rendered, live, strict=True)]
    return live if rendered == PLACEHOLDER else rendered


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what only the server knows: server metadata, status; a Secret's values (render writes
    placeholders, the operator generated keys) become their key names."""
    result = {key: value for key, value in obj.items() if key != "status"}
    result["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in SERVER_METADATA}
    if obj["kind"] == "Secret":
        keys = sorted({*(obj.get("data") or {}), *(obj.get("stringData") or {})})
        result.pop("stringData", None)
        result["data"] = keys
    return result


def object_differences(rendered: dict[str, Any], live: dict[str, Any]) -> list[str]:
    rendered, live = comparable(rendered), comparable(live)
    return differences(_placeholders_matched(rendered, live), live)
