"""Claims whose worker went silent: lost, counted as failed, and a study whose trials keep killing their workers is
failed with the reason instead of starving the others."""

from __future__ import annotations

from collections.abc import Callable

import storage
from storage.claims import MAX_LOST_IN_A_ROW
from tests.storage.test_claim_slots import _age, _claim, _counts, _finish, _status

MakeJob = Callable[..., storage.StudyJob]


def _lose(url: str, name: str = "study") -> None:
    claim = _claim(url, name)
    _age(url, claim, 120)
    with storage.session_scope(url) as session:
        assert storage.reap_stale_claims(session, grace_seconds=60) == 1


def test_a_study_whose_trials_keep_losing_their_worker_is_failed(storage_url: str, make_job: MakeJob) -> None:
    make_job(n_trials=20)
    make_job("other", n_trials=20)
    for _ in range(MAX_LOST_IN_A_ROW - 1):
        _lose(storage_url)
    _finish(storage_url, _claim(storage_url), "complete")  # a trial that finished starts the count again
    for _ in range(MAX_LOST_IN_A_ROW - 1):
        _lose(storage_url)
        assert _status(storage_url) == "queued"  # running, with no live trial: back in the queue
    _lose(storage_url)
    with storage.session_scope(storage_url) as session:
        job = storage.get_job(session, "study")
        assert job.status == "failed"
        assert f"{MAX_LOST_IN_A_ROW} trials in a row lost their worker" in (job.last_error or "")
        assert [j.study_name for j in storage.jobs_needing_trials(session, grace_seconds=60)] == ["other"]
    counts = _counts(storage_url)
    assert counts == {"running": 0, "complete": 1, "pruned": 0, "failed": 2 * MAX_LOST_IN_A_ROW - 1, "interrupted": 0}
