"""`iotsec run`'s log: kopf's success line of each watch-event handler is dropped (one per namespace, policy and
custom resource event at a cold start: most of the log); every other line stays."""

from __future__ import annotations

import logging

import kopf
import pytest
from kopf._core.actions.loggers import LocalObjectLogger, ObjectLogger

from iotsec.cli.run import EventHandlerSuccesses

BODY = kopf.Body({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters", "uid": "u1"}})


@pytest.fixture
def kept(caplog):
    objects = logging.getLogger("kopf.objects")
    quiet = EventHandlerSuccesses()
    objects.addFilter(quiet)
    caplog.set_level(logging.DEBUG, logger="kopf.objects")
    yield lambda: [record.getMessage() for record in caplog.records if record.name == "kopf.objects"]
    objects.removeFilter(quiet)


def test_an_event_handlers_success_is_dropped_and_its_failure_kept(kept):
    settings = kopf.OperatorSettings()
    watching = LocalObjectLogger(body=BODY, settings=settings)  # what kopf gives an on.event handler's run
    watching.info("Handler 'on_namespace' succeeded.")
    watching.exception("Handler 'on_namespace' failed with an exception and will try again in 10 seconds: boom")
    watching.info("Handler 'on_namespace' succeeded. And something else.")
    assert kept() == [
        "Handler 'on_namespace' failed with an exception and will try again in 10 seconds: boom",
        "Handler 'on_namespace' succeeded. And something else.",
    ]


def test_a_reconcile_handlers_lines_are_kept(kept):
    settings = kopf.OperatorSettings()
    changing = ObjectLogger(body=BODY, settings=settings)  # a create/update/resume handler's, posted as Events
    changing.info("Handler 'reconcile' succeeded.")
    changing.info("reconciled (success): 3 namespaces, 5 applications; Ready=True")
    LocalObjectLogger(body=BODY, settings=settings).warning("Handler 'on_namespace' succeeded.")
    assert kept() == [
        "Handler 'reconcile' succeeded.",
        "reconciled (success): 3 namespaces, 5 applications; Ready=True",
        "Handler 'on_namespace' succeeded.",
    ]
