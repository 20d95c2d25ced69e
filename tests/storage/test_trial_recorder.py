"""A running trial's writes through ``TrialRecorder``: start, one transaction per epoch, the final state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import storage
from storage import queries
from storage.reports import delete_study
from tests.storage.helpers import JOB_DEFAULTS, held_trial, outside_trial, trial_id

ROWS = [{"task": "a", "train_loss": 0.5, "val_loss": 0.4, "metric": 0.3, "weight": 1}]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _maker(url: str) -> Callable[..., storage.StudyJob]:
    storage.ensure_schema(url)

    def make(study_name: str, **overrides: Any) -> storage.StudyJob:
        with storage.session_scope(url) as session:
            return storage.create_job(session, study_name=study_name, **(JOB_DEFAULTS | overrides))

    return make


def _curve_epochs(url: str, job_id: int) -> list[int]:
    with storage.session_scope(url) as session:
        return [row.epoch for row in storage.trial_curves(session, job_id=job_id, trial_number=0)]


def test_start_epochs_and_the_final_state_write_everything(storage_url: str, make_job: Callable) -> None:
    job, claim, study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    for epoch in range(5):
        trial.report(1.0 / (epoch + 1), epoch + 1)
        recorder.epoch(epoch, ROWS)
        recorder.flush()
        assert recorder.outcome is not None
        assert recorder.outcome.trial_running and recorder.outcome.job_status == "running"
    trial.set_user_attr("tasks", {"a": {"metric": 0.3}})
    told = study.tell(trial, 0.2)  # through the recorder: the final state, the claim and the summary together
    assert recorder.finished and not recorder.lost
    assert _curve_epochs(storage_url, job.id) == [0, 1, 2, 3, 4]
    outside = outside_trial(storage_url)
    assert outside.state == TrialState.COMPLETE and outside.value == 0.2
    assert outside.params == {"layers": trial.params["layers"]}
    assert outside.intermediate_values == {e + 1: 1.0 / (e + 1) for e in range(5)}
    assert outside.user_attrs["tasks"] == {"a": {"metric": 0.3}}
    assert repr(told) == repr(outside)
    with storage.session_scope(storage_url) as session:
        row = session.get(storage.TrialClaim, claim)
        assert (row.state, row.trial_number) == ("complete", 0)
        summary = queries.summary(session, job_id=job.id, number=0)
        assert summary is not None and summary.state == "complete" and summary.objective == 0.2
        assert summary.params == outside.params and summary.task_metrics == {"a": {"metric": 0.3}}
        assert summary.finished_at == outside.datetime_complete.astimezone(UTC)


def test_every_series_of_an_epoch_is_written_with_its_rows(storage_url: str, make_job: Callable) -> None:
    job, _claim, study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    series = [None, {"sigma": 0.5, "cosine": float("nan")}, {"grad_norm": 2.0}]  # one statement shape for all
    for epoch, named in enumerate(series):
        trial.report(1.0, epoch + 1)
        rows = [ROWS[0] | {"series": named}, ROWS[0] | {"task": "b", "series": {"cosine": float(epoch)}}]
        recorder.epoch(epoch, rows)
    study.tell(trial, 0.2)
    with storage.session_scope(storage_url) as session:
        stored = [(m.epoch, m.task, m.series) for m in storage.trial_curves(session, job_id=job.id, trial_number=0)]
    assert stored == [
        (0, "a", None),
        (0, "b", {"cosine": 0.0}),
        (1, "a", {"sigma": 0.5, "cosine": None}),
        (1, "b", {"cosine": 1.0}),
        (2, "a", {"grad_norm": 2.0}),
        (2, "b", {"cosine": 2.0}),
    ]


def test_the_last_trial_completes_the_job(storage_url: str, make_job: Callable) -> None:
    _job, _claim, study, trial, recorder = held_trial(storage_url, make_job, n_trials=1)
    recorder.start()
    study.tell(trial, state=TrialState.PRUNED)
    with storage.session_scope(storage_url) as session:
        assert storage.get_job(session, "s").status == "completed"
        assert storage.claim_counts(session, "s")["pruned"] == 1


def test_a_trial_whose_summary_cannot_be_written_is_not_finished(storage_url: str, make_job: Callable) -> None:
    """The final state, the claim and the summary commit together or not at all."""
    job, claim, study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    with storage.get_engine(storage_url).begin() as connection:
        connection.exec_driver_sql("ALTER TABLE trial_summaries RENAME TO summaries_away")
    with pytest.raises(Exception, match="summar"):
        study.tell(trial, 0.5)
    assert outside_trial(storage_url).state == TrialState.RUNNING
    with storage.session_scope(storage_url) as session:
        assert session.get(storage.TrialClaim, claim).state == "running"
    with storage.get_engine(storage_url).begin() as connection:
        connection.exec_driver_sql("ALTER TABLE summaries_away RENAME TO trial_summaries")
    study.tell(trial, 0.5)
    assert recorder.finished
    assert outside_trial(storage_url).state == TrialState.COMPLETE
    with storage.session_scope(storage_url) as session:
        assert session.get(storage.TrialClaim, claim).state == "complete"
        assert queries.summary(session, job_id=job.id, number=0) is not None


def test_a_stop_request_is_seen_at_the_end_of_a_long_epoch(storage_url: str, make_job: Callable) -> None:
    _job, _claim, _study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    with storage.session_scope(storage_url) as session:
        storage.request_stop(session, "s")
    recorder.epoch(1, ROWS)
    recorder.flush()
    assert recorder.outcome is not None and recorder.outcome.job_status == "stopping"
    storage.worker_storage(storage_url).release(trial_id(storage_url, trial))


def test_a_trial_failed_elsewhere_is_reported_and_not_written(storage_url: str, make_job: Callable) -> None:
    job, _claim, _study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    plain = optuna.storages.RDBStorage(storage.normalize_url(storage_url))
    plain.set_trial_state_values(trial_id(storage_url, trial), TrialState.FAIL)
    plain.engine.dispose()
    trial.report(0.5, 1)
    recorder.epoch(0, ROWS)
    recorder.flush()
    assert recorder.outcome is not None and not recorder.outcome.trial_running and recorder.lost
    assert outside_trial(storage_url).intermediate_values == {}
    assert _curve_epochs(storage_url, job.id) == [0]  # mtl-tune's own rows record what was trained
    storage.worker_storage(storage_url).release(trial_id(storage_url, trial))


def test_a_trial_whose_study_job_was_deleted_still_finishes(storage_url: str, make_job: Callable) -> None:
    """Its claim and metrics went with the job; Optuna's trial is still told, not left running."""
    _job, _claim, study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    with storage.session_scope(storage_url) as session:
        storage.delete_job(session, "s")
    recorder.epoch(1, ROWS)  # its metric rows have no job any more: they are not written
    recorder.flush()
    assert recorder.outcome is not None and recorder.outcome.job_status is None and recorder.outcome.trial_running
    study.tell(trial, state=TrialState.FAIL)
    assert outside_trial(storage_url).state == TrialState.FAIL


def test_a_study_deleted_and_created_again_gets_nothing_of_a_running_trial(
    storage_url: str, make_job: Callable
) -> None:
    """``study delete`` and a new study under the same name while a trial runs: on SQLite the new job, Optuna study
    and trial get the deleted ones' ids (and the trial its number), and none of the old trial's epochs, Optuna
    writes or final state may reach them."""
    job, _claim, study, trial, recorder = held_trial(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    recorder.flush()
    delete_study(storage_url, "s")
    again = make_job(study_name="s")
    plain = optuna.storages.RDBStorage(storage.normalize_url(storage_url))
    other = optuna.create_study(study_name="s", storage=plain).ask()
    other_id = plain.get_trial_id_from_study_id_trial_number(plain.get_study_id_from_name("s"), other.number)
    if storage_url.startswith("sqlite"):  # the case this guards against: every id handed out again
        assert (again.id, other_id, other.number) == (job.id, trial_id(storage_url, trial), trial.number)
    trial.report(0.5, 1)
    recorder.epoch(1, ROWS)
    recorder.flush()
    assert recorder.outcome is not None and recorder.outcome.job_status is None
    assert not recorder.outcome.trial_running and recorder.lost
    with pytest.raises(KeyError):  # as Optuna says of a deleted trial
        study.tell(trial, 0.25)
    assert _curve_epochs(storage_url, again.id) == []
    newer = plain.get_trial(other_id)
    assert newer.state == TrialState.RUNNING and newer.intermediate_values == {} and newer.params == {}
    with storage.session_scope(storage_url) as session:
        assert storage.claim_counts(session, "s") == dict.fromkeys(storage.CLAIM_STATES, 0)
        assert queries.count_trials(session, job_id=again.id) == 0
    plain.engine.dispose()
