"""The background scan in the operator: every IOTSEC_SCAN_INTERVAL, and a few seconds after a SecurityDomain or
TenantIsolation changes (a domain tightened, a namespace joined), the objects that exist are judged again and the
findings published as PolicyReports (services/scan.py) and as the iotsec_background_* metrics.

One scan at a time (a single task runs them; a change during a scan asks for one more after it). A failed scan
logs one line and is tried again at the next interval; it never stops the operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from iotsec.api.common import GROUP, VERSION
from iotsec.controllers import metrics
from iotsec.controllers.runtime import config, kube
from iotsec.model.manifests import clip
from iotsec.services.scan import Outcome, scan_and_publish

log = logging.getLogger(__name__)
DEBOUNCE_SECONDS = 5.0  # changes within this time after the first one are folded into one scan
REQUESTED_SHARE = 0.1  # of the operator's time, at most, for scans on request (the timer's come every interval)


class Scanner:
    """Runs scans one after another: on a timer, and when `request()` asks for one sooner."""

    def __init__(self, interval: float, debounce: float = DEBOUNCE_SECONDS):
        self.interval, self.debounce = interval, debounce
        self.wanted = asyncio.Event()
        self.scans = 0
        self.last_seconds = 0.0  # how long the last scan took

    def request(self) -> None:
        self.wanted.set()

    async def run(self) -> None:
        while True:
            await self.once()
            try:
                await asyncio.wait_for(self.wanted.wait(), timeout=self.interval)
                # let a burst of changes (a domain and its namespaces) settle, and keep scans on request within
                # REQUESTED_SHARE of the time, though never waiting longer than the timer would: at 1,000 tenants
                # a scan takes 10-50 s, and back to back at a third of the time they held a fifth of the operator's
                # CPU during a cold start (issue 18)
                rest = min(self.interval, self.last_seconds * (1 / REQUESTED_SHARE - 1))
                await asyncio.sleep(max(self.debounce, rest))
            except TimeoutError:
                pass

    async def once(self) -> Outcome | None:
        self.wanted.clear()
        self.scans += 1
        started = time.monotonic()
        try:
            return await asyncio.to_thread(scan_once)
        except Exception as exc:  # a background task must survive anything: the next interval tries again
            log.warning(
                "background scan failed, next try in %.0fs: %s: %s", self.interval, type(exc).__name__, clip(exc, 500)
            )
            log.debug("background scan failure", exc_info=True)
            return None
        finally:
            self.last_seconds = time.monotonic() - started


def scan_once() -> Outcome:
    settings = config()
    outcome = scan_and_publish(kube(), settings.platform, settings.excluded_namespaces)
    result = outcome.result
    metrics.record_background_scan(result.objects, outcome.seconds, time.time())
    published = outcome.published
    failing = sum(1 for o in result.objects if o.failing)
    unavailable = "; ".join(f"{kind}: {why}" for kind, why in sorted(outcome.unavailable.items()))
    log.info(
        "background scan: %d objects in %.1fs, %d violating an enforce-mode domain, %d violations in all%s%s",
        len(result.objects),
        outcome.seconds,
        failing,
        result.violations,
        f"; reports not published: {published.unavailable}" if published and published.unavailable else "",
        f"; not readable: {unavailable}" if unavailable else "",
    )
    return outcome


_scanner: Scanner | None = None


@kopf.on.startup()
async def start_background_scan(memo: kopf.Memo, **_: Any) -> None:
    global _scanner
    interval = config().scan_interval
    if interval <= 0:
        log.info("background scan off (IOTSEC_SCAN_INTERVAL=0)")
        return
    _scanner = Scanner(interval)
    memo["background_scan"] = asyncio.create_task(_scanner.run())


@kopf.on.cleanup()
async def stop_background_scan(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("background_scan")
    if task:
        task.cancel()


_judged: dict[tuple[str, str], tuple[Any, ...]] = {}


def _what_judging_reads(body: dict[str, Any]) -> tuple[Any, ...]:
    """What of a domain or tenant the scan's judgement depends on: its spec (generation), labels, whether it is
    going, its members. Not the conditions and kopf's annotations its own reconciles write (issue 18: each status
    write asked for a whole-cluster scan, back to back through a cold start)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    members = (status.get("memberNamespaces"), status.get("namespaces"))
    return meta.get("generation"), repr(meta.get("labels")), bool(meta.get("deletionTimestamp")), repr(members)


@kopf.on.event(GROUP, VERSION, "securitydomains", id="background-scan")
@kopf.on.event(GROUP, VERSION, "tenantisolations", id="background-scan")
async def rescan_on_policy_change(type: str | None, body: kopf.Body, **_: Any) -> None:
    """A domain or tenant changed: what exists may be judged differently now."""
    key = (str(body.get("kind")), str((body.get("metadata") or {}).get("name")))
    if type == "DELETED":
        _judged.pop(key, None)
    else:
        seen = _what_judging_reads(dict(body))
        if _judged.get(key) == seen:
            return
        _judged[key] = seen
    if _scanner is not None:
        _scanner.request()
