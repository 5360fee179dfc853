"""The command line's layout (issue 13): one module per command under `iotsec.cli`, `cli.main` only assembles them,
formatting stays in the CLI and never in `iotsec.services`, and the cluster-free commands load no cluster code."""

from __future__ import annotations

import argparse
import ast
import inspect
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from iotsec.cli import main as cli
from iotsec.services import devices
from tests.conftest import ROOT

SERVICES = ROOT / "operator" / "iotsec" / "services"
OWNER = {  # command -> the module that registers and handles it
    "crds": "crds",
    "validate": "validate",
    "controls": "controls",
    "rules": "rules",
    "render": "render",
    "run": "run",
    "check": "check",
    "webhook": "webhook",
    "webhook-config": "webhook",
    "device": "device",
    "rbac": "rbac",
    "restore": "restore",
    "backup": "backup",
    "audit": "audit",
    "report": "report",
}


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _handlers(parser: argparse.ArgumentParser) -> list[object]:
    """Every handler reachable from `parser`, through nested subcommands (`device issue`, `audit verify`)."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not nested:
        return [parser.get_default("handler")]
    return [h for child in nested[0].choices.values() for h in _handlers(child)]


def test_every_command_is_handled_by_its_own_module():
    commands = _choices(cli._parser())
    assert set(commands) == set(OWNER)
    for name, subparser in commands.items():
        modules = {handler.__module__ for handler in _handlers(subparser)}  # type: ignore[attr-defined]
        assert modules == {f"iotsec.cli.{OWNER[name]}"}, name


def test_cli_main_only_assembles_the_commands():
    defined = {
        node.name
        for node in ast.parse(inspect.getsource(cli)).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    assert defined == {"main", "_parser"}


def test_services_neither_print_nor_parse_arguments_nor_format_tables():
    for path in sorted(SERVICES.glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        attributes = {
            f"{n.value.id}.{n.attr}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
        }
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "print" not in names, path.name
        assert not attributes & {"sys.stdout", "sys.stderr", "sys.argv"}, path.name
        assert "argparse" not in imported, path.name
    assert not hasattr(devices, "table"), "the `device list` table is the CLI's (iotsec.cli.device.table)"


def test_the_device_table_shows_unknown_values_as_dashes():
    from iotsec.cli.device import table

    rows = [{"deviceID": "meter-1", "serial": 7, "notAfter": None, "issuer": "ab" * 20, "revoked": None}]
    assert table(rows).splitlines() == [
        "DEVICE   SERIAL  NOT-AFTER  ISSUER            REVOKED",
        "meter-1  7       -          abababababababab  -",
    ]


PROBE = """
import sys
from iotsec.cli.main import main
for argv in {argvs!r}:
    main(argv)
heavy = ("kopf", "kubernetes", "aiohttp", "prometheus_client", "urllib3")
print(sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy}}))
"""


@pytest.mark.parametrize(
    "argvs",
    [
        [
            ["validate", "examples"],
            ["render", "--summary", "examples/platform"],
            ["check", "examples/platform", "examples/workloads"],
            ["controls"],
            ["crds", "--check", "crds"],
            ["rbac"],
            ["webhook-config", "--url", "https://127.0.0.1:1/validate"],
            ["audit", "policy", "--flags"],
            ["audit", "verify", "nowhere"],
        ]
    ],
)
def test_the_cluster_free_commands_load_no_cluster_code(argvs):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argvs=argvs)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_console_script_and_python_dash_m_still_start_the_cli():
    [script] = [e for e in entry_points(group="console_scripts") if e.name == "iotsec"]
    assert script.value == "iotsec.cli.main:main"
    assert script.load() is cli.main
    done = subprocess.run([sys.executable, "-m", "iotsec", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith("iotsec ")
