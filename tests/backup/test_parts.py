"""The runner's parts that need no restic: result times, restic's JSON, redaction, and the Job's imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from iotsec.servers.backupjob import runner
from iotsec.servers.backupjob.operations import _newest
from iotsec.servers.backupjob.restic import Completed, Restic, Target, backup_messages, forget_kept, ls_entries
from iotsec.servers.backupjob.result import OperationOutcome

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def test_result_times_are_utc_with_milliseconds() -> None:
    result = OperationOutcome("verify", str).result()
    for stamp in (result.started, result.finished):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    assert result.succeeded
    assert result.errors == []


def test_errors_pass_through_the_redaction_and_land_on_their_target() -> None:
    outcome = OperationOutcome("backup", lambda text: text.replace("hunter2", "***"))
    outcome.fail("wrong password hunter2", "primary")
    outcome.fail("no targets")
    result = outcome.result()
    assert result.errors == ["primary: wrong password ***", "no targets"]
    assert result.targets == [
        {
            "name": "primary",
            "snapshot_id": None,
            "files": None,
            "bytes": None,
            "snapshots": None,
            "error": "wrong password ***",
        }
    ]
    assert not result.succeeded


def test_the_newest_snapshot_is_found_across_nanoseconds_and_offsets() -> None:
    listing = [
        {"id": "old", "time": "2026-11-27T03:00:00.123456789+01:00"},  # 02:00:00.123456 UTC
        {"id": "new", "time": "2026-11-27T02:00:00.123457001Z"},
        {"id": "broken", "time": "yesterday"},
        {"id": "untimed"},
    ]
    assert _newest(listing)["id"] == "new"


def test_restic_output_is_redacted_and_userinfo_in_urls_hidden() -> None:
    restic = Restic("Tr0ub4dor-and-3")
    restic.remember(Target("s3", "s3:bucket", "primary", {"AWS_SECRET_ACCESS_KEY": "AKIA-very-secret"}))
    text = "Tr0ub4dor-and-3 AKIA-very-secret rest:https://user:pw@host/repo"
    assert restic.redact(text) == "*** *** rest:https://***@host/repo"


def test_restic_json_is_read_line_by_line() -> None:
    stdout = '{"message_type":"status"}\n{"message_type":"summary","snapshot_id":"abc","total_files_processed":2}\n'
    stderr = '{"message_type":"error","error":{"Err":13},"item":"/data/locked"}\nplain warning\n'
    summary, unread = backup_messages(Completed(["restic"], 3, stdout, stderr))
    assert summary is not None
    assert summary["snapshot_id"] == "abc"
    assert unread == ["/data/locked: Permission denied"]

    assert forget_kept('[{"keep":[{"id":"a"},{"id":"b"}]}]\nprune report\n') == [{"id": "a"}, {"id": "b"}]
    assert forget_kept("no json at all") is None

    chosen, nodes = ls_entries('{"struct_type":"snapshot","id":"s1"}\nnoise\n{"struct_type":"node","path":"/d/f"}\n')
    assert chosen == {"struct_type": "snapshot", "id": "s1"}
    assert list(nodes) == ["/d/f"]


def test_restic_s_double_report_of_a_path_is_one_entry_and_an_empty_reason_is_found_out(tmp_path: Path) -> None:
    """restic 0.14's real output for a folder and a file it cannot read (captured from `restic backup --json` run
    without CAP_DAC_OVERRIDE): each path twice, the folder's reason an empty ``{}``. The paths here are real: one
    gone (so this process finds the reason), one readable here (so no reason can be found)."""
    gone, readable = tmp_path / "gone", tmp_path / "readable"
    readable.mkdir()
    stderr = "\n".join(
        [
            f'{{"message_type":"error","error":{{}},"during":"archival","item":"{gone}"}}',
            f'{{"message_type":"error","error":{{"Op":"open","Path":"{gone}/db","Err":13}},"during":"archival",'
            f'"item":"{gone}/db"}}',
            f'{{"message_type":"error","error":{{}},"during":"archival","item":"{readable}"}}',
            f'{{"message_type":"error","error":{{}},"during":"scan","item":"{gone}"}}',
            f'{{"message_type":"error","error":{{"Op":"open","Path":"{gone}/db","Err":13}},"during":"scan",'
            f'"item":"{gone}/db"}}',
            f'{{"message_type":"error","error":{{}},"during":"scan","item":"{readable}"}}',
            "Warning: at least one source file could not be read",
        ]
    )

    _, unread = backup_messages(Completed(["restic"], 3, "", stderr))

    assert unread == [
        f"{gone}: No such file or directory",
        f"{gone}/db: Permission denied",
        f"{readable}: restic gave no reason",
    ]


def test_the_entry_point_keeps_its_exit_codes() -> None:
    assert (runner.EXIT_OK, runner.EXIT_FAILED, runner.EXIT_CONFIG) == (0, 1, 2)
    assert runner.main(["--help"]) == runner.EXIT_OK


def test_the_job_program_imports_the_standard_library_and_iotsec_only() -> None:
    """The Job image runs Python and restic: nothing installed beside iotsec may be needed (-S: no site-packages)."""
    code = (
        "import sys; import iotsec.servers.backupjob.runner; "
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(OPERATOR)!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    outside = set(done.stdout.split()) - set(sys.stdlib_module_names) - {"iotsec", "__main__"}
    assert outside == set()
