"""`iotsec run` logs each per-object line with its object's name (issue 15's live test reads the log to prove that a
restarted operator reconciled every resource: a bare "reconciled (success): ..." names none of them)."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from iotsec.cli.main import main


@pytest.fixture
def root_handlers() -> Any:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_reconcile_line_names_its_object(monkeypatch, root_handlers):
    monkeypatch.setattr("iotsec.controllers.register", lambda config: None)
    monkeypatch.setattr(kopf, "run", lambda **_: None)
    assert main(["run", "--liveness", "", "--metrics-port", "0"]) == 0
    handler = logging.getLogger().handlers[-1]
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "reconciled (success): 2 policies", (), None)
    record.k8s_ref = {"name": "timeseries", "namespace": "iot-processing"}  # what kopf's object logger attaches
    assert "[iot-processing/timeseries] reconciled (success): 2 policies" in handler.format(record)
