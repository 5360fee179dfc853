"""A failed backup Job is reported once as a Warning event, not again at every resync."""

from iotsec.controllers.backup import _already_reported


def body(*conditions: dict) -> dict:
    return {"metadata": {"name": "p"}, "status": {"conditions": list(conditions)}}


FAILED = {
    "type": "BackupSucceeded",
    "status": "False",
    "message": "Job iotsec-backup-p-29 failed at 2026-11-27T02:00:05Z",
}


def test_the_same_failed_job_is_not_reported_twice():
    assert _already_reported(body(FAILED), "BackupSucceeded", "iotsec-backup-p-29")


def test_a_new_failed_job_is_reported():
    assert not _already_reported(body(FAILED), "BackupSucceeded", "iotsec-backup-p-30")


def test_a_failure_after_success_or_of_another_kind_is_reported():
    succeeded = {**FAILED, "status": "True", "message": "Job iotsec-backup-p-29 succeeded at 2026-11-27T02:00:05Z"}
    assert not _already_reported(body(succeeded), "BackupSucceeded", "iotsec-backup-p-29")
    assert not _already_reported(body(FAILED), "Verified", "iotsec-backup-p-29")
    assert not _already_reported({"metadata": {"name": "p"}}, "BackupSucceeded", "iotsec-backup-p-29")
