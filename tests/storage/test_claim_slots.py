"""Trial slots: the target is never overshot, failed and silent claims free their slots, jobs complete."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update

import storage
from storage.models import utcnow
from tests.storage.helpers import Processes, claim_repeatedly

MakeJob = Callable[..., storage.StudyJob]


def _claim(url: str, name: str = "study", grace: float = 60) -> int | None:
    return storage.claim_slot(url, study_name=name, worker="host:1", grace_seconds=grace)


def _counts(url: str, name: str = "study") -> dict[str, int]:
    with storage.session_scope(url) as session:
        return storage.claim_counts(session, name)


def _status(url: str, name: str = "study") -> str:
    with storage.session_scope(url) as session:
        return storage.get_job(session, name).status


def _finish(url: str, claim_id: int | None, state: str) -> None:
    assert claim_id is not None
    with storage.session_scope(url) as session:
        storage.finish_claim(session, claim_id, state=state)


def _age(url: str, claim_id: int | None, seconds: float) -> None:
    with storage.session_scope(url) as session:
        stale = utcnow() - timedelta(seconds=seconds)
        session.execute(update(storage.TrialClaim).where(storage.TrialClaim.id == claim_id).values(heartbeat_at=stale))


def test_claims_stop_at_the_target(storage_url: str, make_job: MakeJob) -> None:
    make_job(n_trials=3)
    claims = [_claim(storage_url) for _ in range(5)]
    assert all(c is not None for c in claims[:3]) and claims[3:] == [None, None]
    assert len(set(claims[:3])) == 3
    assert _status(storage_url) == "running"
    assert _counts(storage_url) == {"running": 3, "complete": 0, "pruned": 0, "failed": 0, "interrupted": 0}


def test_failed_claims_free_their_slot_and_finished_ones_complete_the_job(storage_url: str, make_job: MakeJob) -> None:
    make_job(n_trials=2)
    first, second = _claim(storage_url), _claim(storage_url)
    _finish(storage_url, first, "failed")
    third = _claim(storage_url)
    assert third is not None and _claim(storage_url) is None
    _finish(storage_url, second, "complete")
    assert _status(storage_url) == "running"
    _finish(storage_url, third, "pruned")
    assert _status(storage_url) == "completed"
    assert _claim(storage_url) is None
    assert _counts(storage_url) == {"running": 0, "complete": 1, "pruned": 1, "failed": 1, "interrupted": 0}


def test_silent_claims_free_their_slot_and_heartbeats_keep_it(storage_url: str, make_job: MakeJob) -> None:
    make_job(n_trials=2)
    silent, beating = _claim(storage_url), _claim(storage_url)
    _age(storage_url, silent, 120)
    _age(storage_url, beating, 120)
    with storage.session_scope(storage_url) as session:
        assert beating is not None
        storage.heartbeat(session, beating)
        assert [j.study_name for j in storage.jobs_needing_trials(session, grace_seconds=60)] == ["study"]
    assert _claim(storage_url, grace=60) is not None
    assert _claim(storage_url, grace=60) is None
    with storage.session_scope(storage_url) as session:
        assert storage.jobs_needing_trials(session, grace_seconds=60) == []


def test_reaping_fails_silent_claims_and_settles_a_stop(storage_url: str, make_job: MakeJob) -> None:
    make_job(n_trials=3)
    silent, beating = _claim(storage_url), _claim(storage_url)
    _age(storage_url, silent, 120)
    with storage.session_scope(storage_url) as session:
        assert storage.request_stop(session, "study").status == "stopping"
        assert storage.reap_stale_claims(session, grace_seconds=60) == 1
        assert storage.get_job(session, "study").status == "stopping"  # the beating claim still runs
    _finish(storage_url, beating, "complete")
    assert _status(storage_url) == "stopped"
    assert _counts(storage_url) == {"running": 0, "complete": 1, "pruned": 0, "failed": 1, "interrupted": 0}

    # A stop whose last running claim is a silent one settles when the claim is reaped.
    with storage.session_scope(storage_url) as session:
        storage.resume(session, "study")
    dead = _claim(storage_url)
    _age(storage_url, dead, 120)
    with storage.session_scope(storage_url) as session:
        assert storage.request_stop(session, "study").status == "stopping"
    with storage.session_scope(storage_url) as session:
        assert storage.reap_stale_claims(session, grace_seconds=60) == 1
        assert storage.get_job(session, "study").status == "stopped"


def test_attach_trial_records_the_number(storage_url: str, make_job: MakeJob) -> None:
    make_job()
    claim_id = _claim(storage_url)
    assert claim_id is not None
    with storage.session_scope(storage_url) as session:
        storage.attach_trial(session, claim_id, 7)
    with storage.session_scope(storage_url) as session:
        claim = session.get(storage.TrialClaim, claim_id)
        assert claim is not None and claim.trial_number == 7 and claim.worker == "host:1"


def test_only_active_jobs_give_slots(storage_url: str, make_job: MakeJob) -> None:
    make_job("a", n_trials=1)
    make_job("b", n_trials=1)
    make_job("c", n_trials=1)
    assert _claim(storage_url, "missing") is None
    with storage.session_scope(storage_url) as session:
        storage.request_stop(session, "b")
        assert [j.study_name for j in storage.jobs_needing_trials(session, grace_seconds=60)] == ["a", "c"]
        assert [j.study_name for j in storage.jobs_needing_trials(session, study_name="c", grace_seconds=60)] == ["c"]
    assert _claim(storage_url, "b") is None
    assert _claim(storage_url, "a") is not None
    with storage.session_scope(storage_url) as session:
        assert [j.study_name for j in storage.jobs_needing_trials(session, grace_seconds=60)] == ["c"]
    with pytest.raises(storage.StudyNotFound), storage.session_scope(storage_url) as session:
        storage.claim_counts(session, "missing")


@pytest.mark.parametrize("fail_ratio", [0.0, 0.3], ids=["hold", "finish"])
def test_concurrent_processes_never_overshoot(
    storage_url: str, make_job: MakeJob, processes: Processes, fail_ratio: float
) -> None:
    """4 processes race for 10 slots: holding their claims (exactly 10 granted), or finishing them at once
    with some failures (exactly 10 complete, the job completed)."""
    make_job(n_trials=10)
    claimed = processes.run(claim_repeatedly, [(storage_url, "study", f"w{i}", 40, fail_ratio) for i in range(4)])
    counts = _counts(storage_url)
    granted = sum(len(c) for c in claimed)
    if fail_ratio == 0:
        assert granted == 10 and counts["running"] == 10
    else:
        assert counts["complete"] == 10 and counts["running"] == 0
        assert granted == 10 + counts["failed"]
        assert _status(storage_url) == "completed"
