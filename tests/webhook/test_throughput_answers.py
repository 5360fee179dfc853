"""The webhook's answers, byte for byte, and what it records, through the HTTPS server as deployed (bounded TLS
serving): the throughput work (issue 18) may change how an answer is made, never what it is.

Each case's status, exact response bytes and metric increments are pinned by a digest taken from the server before
that work; a fast path that changed a decision, a message, a warning, an audit annotation, the JSON's bytes or a
metric would change a digest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import REGISTRY

from iotsec.pki import certs
from iotsec.servers.bounded import WEBHOOK_BOUNDS
from iotsec.servers.bounded import server as bounded
from iotsec.servers.webhook.review import MAX_BODY_BYTES
from iotsec.servers.webhook.server import StaticSnapshot, make_app
from tests.conftest import EXAMPLES
from tests.webhook.test_webhook import SNAPSHOT, admission_review

NOW = datetime(2027, 1, 1, tzinfo=UTC)  # within the example exception's approval (it ends 2027-03-31)
COUNTERS = ("iotsec_admission_requests_total", "iotsec_violations_total", "iotsec_exceptions_used_total")


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((EXAMPLES / "workloads").glob("*/*.yaml")):
        for index, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d):
            found.append((f"{path.parent.name}/{path.stem}#{index}", doc))
    return found


def _review(obj: dict[str, Any], uid: str, **options: Any) -> bytes:
    return json.dumps(admission_review(obj, uid=uid, **options)).encode()


def _in(namespace: str, obj: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    moved = copy.deepcopy(obj)
    moved["metadata"]["namespace"] = namespace
    if name:
        moved["metadata"]["name"] = name
    return moved


def _cases() -> dict[str, bytes]:
    workloads = dict(_workloads())
    cases = {f"create {name}": _review(obj, uid=f"u-{i}") for i, (name, obj) in enumerate(workloads.items())}
    privileged = workloads["nonconforming/privileged-container#0"]
    writable = workloads["nonconforming/writable-root-fs#0"]
    cases.update(
        {
            "warn mode": _review(_in("monitoring", privileged), uid="u-warn"),
            "dry run": _review(privileged, uid="u-dry", dry_run=True),
            "update": _review(workloads["nonconforming/host-network#0"], uid="u-update", operation="UPDATE"),
            "delete": _review(privileged, uid="u-delete", operation="DELETE"),
            "exception used": _review(_in("iot-processing", writable, "legacy-protocol-converter"), uid="u-exception"),
            "exception used, dry run": _review(
                _in("iot-processing", writable, "legacy-protocol-converter"), uid="u-exception-dry", dry_run=True
            ),
            "unknown namespace": _review(_in("not-there", privileged), uid="u-unknown"),
            "unknown kind": _review(
                {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}},
                uid="u-widget",
            ),
            "malformed object": _review(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p", "namespace": "iot-ingest"},
                    "spec": {"containers": "not-a-list"},
                },
                uid="u-malformed",
            ),
            "not json": b"{not json",
            "not an object": b"[]",
            "no request": json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "too large": b'{"pad": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}',
        }
    )
    return cases


# status, sha256 of the response bytes (first 16 hex digits), sha256 of the sorted metric increments
EXPECTED: dict[str, tuple[int, str, str]] = {
    "create conforming/mqtt-gateway-loadbalancer#0": (200, "0c61bf35bd059479", "05e9e5165490adc4"),
    "create conforming/mqtt-gateway#0": (200, "3a670cb7e382ec00", "91e6cd0b42367c1a"),
    "create conforming/mqtt-gateway#1": (200, "0af78013acf92c96", "82053e778e3fdf74"),
    "create conforming/mqtt-gateway#2": (200, "822de2d5923674c5", "e18f7c4a2d049b1b"),
    "create conforming/operators-rolebinding#0": (200, "40146539bb12e03b", "d2f280817356e6ba"),
    "create conforming/operators-rolebinding#1": (200, "f6405dd24af8a55e", "bb165e42bb504ffc"),
    "create conforming/partner-api-ingress#0": (200, "c164ebd3974835c2", "c8a3730bc9c4e654"),
    "create conforming/partner-api#0": (200, "b29cb446876a3729", "91e6cd0b42367c1a"),
    "create conforming/partner-api#1": (200, "d5ae646322542fa9", "82053e778e3fdf74"),
    "create conforming/partner-api#2": (200, "ba13b52010ef4dd8", "05e9e5165490adc4"),
    "create conforming/telemetry-export-cronjob#0": (200, "728e4c0899bedf1e", "91e6cd0b42367c1a"),
    "create conforming/telemetry-export-cronjob#1": (200, "25fa2dadfafcc090", "78792cec0d438c1e"),
    "create conforming/telemetry-exports-pvc#0": (200, "c87be60a8ba84d95", "af3e0f1539c96eb4"),
    "create conforming/telemetry-ingest-service#0": (200, "10c7441b8508de27", "05e9e5165490adc4"),
    "create conforming/telemetry-ingest#0": (200, "ac4253cc34d952f4", "91e6cd0b42367c1a"),
    "create conforming/telemetry-ingest#1": (200, "e69b751c7ea2ffbb", "82053e778e3fdf74"),
    "create conforming/tsdb-statefulset#0": (200, "f28a1d5b99626e22", "91e6cd0b42367c1a"),
    "create conforming/tsdb-statefulset#1": (200, "ba354e86327f5262", "05e9e5165490adc4"),
    "create conforming/tsdb-statefulset#2": (200, "f4d5e994fb49119c", "f66f4278d46ff41c"),
    "create nonconforming/admin-console-ingress-http#0": (200, "78ac61cdbd9cf84b", "fe4ade618c0b9d39"),
    "create nonconforming/capabilities-not-dropped#0": (200, "df317eb2fd7be3d6", "964237853cdd5f3f"),
    "create nonconforming/capability-net-admin#0": (200, "4ba7a50a91b9e23c", "964237853cdd5f3f"),
    "create nonconforming/confidential-pvc-unencrypted#0": (200, "149974d5afb9ba9e", "3f0d9ab5a32dd478"),
    "create nonconforming/contractors-cluster-admin#0": (200, "f4323f4c2b805272", "bc37cac30e1a450f"),
    "create nonconforming/default-token-automount#0": (200, "2e31b6ddf99d37a1", "3ebb723b8571d5b0"),
    "create nonconforming/foreign-registry#0": (200, "a3ed602149fb376e", "07f106997081b4f0"),
    "create nonconforming/host-network#0": (200, "414f92d8c354677a", "cf3d16dedb2dabaf"),
    "create nonconforming/host-path-volume#0": (200, "d23176030d3016fa", "5e32596987574672"),
    "create nonconforming/image-latest#0": (200, "05388510bcf75670", "07f106997081b4f0"),
    "create nonconforming/image-untagged#0": (200, "5fc02ff94f5a8485", "07f106997081b4f0"),
    "create nonconforming/ingress-without-rate-limit#0": (200, "0b08f8fdbaeede63", "8fef47af97faaa99"),
    "create nonconforming/ingress-without-tls#0": (200, "80630829135f2c77", "fca4aed0942be7fc"),
    "create nonconforming/job-privileged-init-container#0": (200, "ec334179f6ba0f73", "511a7906b3812f09"),
    "create nonconforming/literal-secret-args#0": (200, "6af6bcf44bdf784f", "20b31b228f29e470"),
    "create nonconforming/literal-secret-env#0": (200, "4fbc0d7a1a66913a", "20b31b228f29e470"),
    "create nonconforming/missing-limits#0": (200, "1046537ab4c6ba08", "860c7c263997d49c"),
    "create nonconforming/multiple-violations#0": (200, "b95c5268e1547085", "91e6cd0b42367c1a"),
    "create nonconforming/multiple-violations#1": (200, "aba05cbcee5e788f", "aaebf14fb048874e"),
    "create nonconforming/nodeport-core-zone#0": (200, "1f787a76c92dff1a", "752d490413a6fce5"),
    "create nonconforming/privilege-escalation#0": (200, "60396f3f44306c89", "964237853cdd5f3f"),
    "create nonconforming/privileged-container#0": (200, "06f98de01a11171d", "c0b9a916fec8296a"),
    "create nonconforming/run-as-non-root-missing#0": (200, "a842074b09d9b5fc", "964237853cdd5f3f"),
    "create nonconforming/run-as-root#0": (200, "f38c85c7da7a8b8e", "c0b9a916fec8296a"),
    "create nonconforming/scratch-namespace#0": (200, "075a20451bdd6e89", "c2ff7d4a097ce1a8"),
    "create nonconforming/telnet-port#0": (200, "bf9c2cdb8312a411", "c403f4adc8afee7f"),
    "create nonconforming/writable-root-fs#0": (200, "341e64a1a7aaa5e6", "467168145ecddfd7"),
    "warn mode": (200, "a6596bec5e19bf67", "9e241115aea2c64b"),
    "dry run": (200, "4df89acac3a440a2", "bda2a19f6b72e613"),
    "update": (200, "2cfef03455c9b674", "4c7197aca44d237d"),
    "delete": (200, "7a32e9666047134a", "a51fea9e3db8dc86"),
    "exception used": (200, "cdf7d115b23bb6dd", "faf877c1958fe472"),
    "exception used, dry run": (200, "174ac00f71e7654b", "82053e778e3fdf74"),
    "unknown namespace": (200, "a5a31054bc2726b5", "0c38f6baf5cca3d1"),
    "unknown kind": (200, "4891b065e3ac4b04", "53c13c9f99531046"),
    "malformed object": (400, "bd55bca1dafc0bd4", "b11489c2699a1508"),
    "not json": (400, "2828a6c45cd4acd9", "829e6047eaf4fc43"),
    "not an object": (400, "9accb3fa14d2b211", "829e6047eaf4fc43"),
    "no request": (400, "8d5584949eba72eb", "829e6047eaf4fc43"),
    "too large": (400, "12e06f0bb33d6197", "829e6047eaf4fc43"),
}


def _counters() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name in COUNTERS:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _increments(before: dict[Any, float], after: dict[Any, float]) -> str:
    changed = sorted((key, value - before.get(key, 0.0)) for key, value in after.items() if value != before.get(key))
    return hashlib.sha256(repr(changed).encode()).hexdigest()[:16]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_webhook(tmp_path: Path) -> tuple[Any, Any, int, ssl.SSLContext]:
    """The webhook's app on the bounded HTTPS server, as deployed, over the example platform: (runner, site, port,
    a client TLS context that trusts its CA)."""
    ca = certs.new_ca("test-ca", datetime.now(UTC))
    pair = certs.new_serving_cert(ca, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    (tmp_path / "tls.crt").write_text(pair.cert_pem)
    (tmp_path / "tls.key").write_text(pair.key_pem)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    port = _free_port()
    app = make_app(StaticSnapshot(SNAPSHOT), now=lambda: NOW)
    runner, site = await bounded.start(app, "webhook", "127.0.0.1", port, serving, WEBHOOK_BOUNDS, MAX_BODY_BYTES)
    return runner, site, port, ssl.create_default_context(cadata=ca.cert_pem)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Callable[[bytes], Any]]:
    runner, _, port, client_tls = await start_webhook(tmp_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls, limit=1)) as session:

        async def post(body: bytes) -> tuple[int, bytes]:
            headers = {"Content-Type": "application/json"}
            async with session.post(f"https://localhost:{port}/validate", data=body, headers=headers) as answer:
                return answer.status, await answer.read()

        yield post
    await runner.cleanup()


async def test_every_answer_and_record_is_what_it_was(server):
    cases = _cases()
    assert set(cases) == set(EXPECTED), "a case was added or removed: take its digest from the code before a change"
    found = {}
    for name, body in cases.items():
        before = _counters()
        status, answer = await server(body)
        found[name] = (status, hashlib.sha256(answer).hexdigest()[:16], _increments(before, _counters()))
    assert found == EXPECTED


async def test_the_cases_cover_each_kind_of_answer(server):
    """The pinned cases are worth pinning: allowed, denied, warned, skipped and refused answers, with warnings,
    audit annotations and exception use among them."""
    verdicts: set[str] = set()
    for body in _cases().values():
        status, answer = await server(body)
        response = json.loads(answer).get("response", {})
        if status == 400:
            verdicts.add("400")
        elif not response["allowed"]:
            verdicts.add("denied")
        else:
            verdicts.add("allowed")
        verdicts.update(key for key in ("warnings", "auditAnnotations") if key in response)
        if "exceptions" in response.get("auditAnnotations", {}):
            verdicts.add("exception")
    assert verdicts == {"400", "denied", "allowed", "warnings", "auditAnnotations", "exception"}
