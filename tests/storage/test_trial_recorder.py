"""A running trial's writes through ``TrialRecorder``: start, one transaction per epoch, close.

On PostgreSQL the epochs are pipelined: a worker does not wait for each epoch's reply before training on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC
from typing import Any

import optuna
import psycopg
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState
from sqlalchemy import make_url, select

import storage
from storage import api_queries, epochs
from storage.epochs import TrialRecorder
from tests.pg import ADMIN_DSN
from tests.storage.helpers import JOB_DEFAULTS

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
ROWS = [{"task": "a", "train_loss": 0.5, "val_loss": 0.4, "metric": 0.3, "weight": 1}]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _running(
    url: str, make_job: Callable, **job: Any
) -> tuple[storage.StudyJob, int, optuna.Study, optuna.Trial, TrialRecorder]:
    """A job, a claim of it, and a held trial with one parameter, with its recorder as its finisher."""
    made = make_job(study_name="s", **job)
    claim = storage.claim_slot(url, study_name="s", worker="w", grace_seconds=60)
    assert claim is not None
    rdb = storage.optuna_storage(url)
    study = optuna.create_study(study_name="s", storage=rdb)
    trial = study.ask()
    rdb.hold(trial._trial_id, rdb.get_study_id_from_name("s"))
    trial.suggest_int("layers", 1, 4)
    recorder = TrialRecorder(
        url, rdb, job_id=made.id, claim_id=claim, trial_id=trial._trial_id, trial_number=trial.number
    )
    rdb.hold(trial._trial_id, rdb.get_study_id_from_name("s"), finisher=recorder.finish)
    return made, claim, study, trial, recorder


def _maker(url: str) -> Callable[..., storage.StudyJob]:
    storage.ensure_schema(url)

    def make(study_name: str, **overrides: Any) -> storage.StudyJob:
        with storage.session_scope(url) as session:
            return storage.create_job(session, study_name=study_name, **(JOB_DEFAULTS | overrides))

    return make


def _outside(url: str) -> optuna.trial.FrozenTrial:
    plain = optuna.storages.RDBStorage(storage.normalize_url(url))
    try:
        return optuna.load_study(study_name="s", storage=plain).trials[-1]
    finally:
        plain.engine.dispose()


def _curve_epochs(url: str, job_id: int) -> list[int]:
    with storage.session_scope(url) as session:
        return [row.epoch for row in storage.trial_curves(session, job_id=job_id, trial_number=0)]


def test_start_epochs_and_the_final_state_write_everything(storage_url: str, make_job: Callable) -> None:
    job, claim, study, trial, recorder = _running(storage_url, make_job)
    recorder.start()
    for epoch in range(5):
        trial.report(1.0 / (epoch + 1), epoch + 1)
        recorder.epoch(epoch, ROWS)
    trial.set_user_attr("tasks", {"a": {"metric": 0.3}})
    told = study.tell(trial, 0.2)  # through the recorder: the final state, the claim and the summary together
    assert recorder.finished and not recorder.lost
    outcome = recorder.close()
    assert outcome is not None and outcome.trial_running and outcome.job_status == "running"
    assert recorder.close() == outcome  # closing twice is harmless
    assert _curve_epochs(storage_url, job.id) == [0, 1, 2, 3, 4]
    outside = _outside(storage_url)
    assert outside.state == TrialState.COMPLETE and outside.value == 0.2
    assert outside.params == {"layers": trial.params["layers"]}
    assert outside.intermediate_values == {e + 1: 1.0 / (e + 1) for e in range(5)}
    assert outside.user_attrs["tasks"] == {"a": {"metric": 0.3}}
    assert repr(told) == repr(outside)
    with storage.session_scope(storage_url) as session:
        row = session.get(storage.TrialClaim, claim)
        assert (row.state, row.trial_number) == ("complete", 0)
        summary = api_queries.summary(session, job_id=job.id, number=0)
        assert summary is not None and summary.state == "complete" and summary.objective == 0.2
        assert summary.params == outside.params and summary.task_metrics == {"a": {"metric": 0.3}}
        assert summary.finished_at == outside.datetime_complete.astimezone(UTC)


def test_every_series_of_an_epoch_is_written_with_its_rows(storage_url: str, make_job: Callable) -> None:
    job, _claim, study, trial, recorder = _running(storage_url, make_job)
    recorder.start()
    series = [None, {"sigma": 0.5, "cosine": float("nan")}, {"grad_norm": 2.0}]  # one statement shape for all
    for epoch, named in enumerate(series):
        trial.report(1.0, epoch + 1)
        rows = [ROWS[0] | {"series": named}, ROWS[0] | {"task": "b", "series": {"cosine": float(epoch)}}]
        recorder.epoch(epoch, rows)
    study.tell(trial, 0.2)
    recorder.close()
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
    _job, _claim, study, trial, recorder = _running(storage_url, make_job, n_trials=1)
    recorder.start()
    study.tell(trial, state=TrialState.PRUNED)
    recorder.close()
    with storage.session_scope(storage_url) as session:
        assert storage.get_job(session, "s").status == "completed"
        assert storage.claim_counts(session, "s")["pruned"] == 1


def test_a_trial_whose_summary_cannot_be_written_is_not_finished(storage_url: str, make_job: Callable) -> None:
    """The final state, the claim and the summary commit together or not at all."""
    job, claim, study, trial, recorder = _running(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    with storage.get_engine(storage_url).begin() as connection:
        connection.exec_driver_sql("ALTER TABLE trial_summaries RENAME TO summaries_away")
    with pytest.raises(Exception, match="summar"):
        study.tell(trial, 0.5)
    assert _outside(storage_url).state == TrialState.RUNNING
    with storage.session_scope(storage_url) as session:
        assert session.get(storage.TrialClaim, claim).state == "running"
    with storage.get_engine(storage_url).begin() as connection:
        connection.exec_driver_sql("ALTER TABLE summaries_away RENAME TO trial_summaries")
    study.tell(trial, 0.5)  # on PostgreSQL the failed pipeline is left for a new connection
    assert recorder.finished
    if storage_url.startswith("postgresql"):
        with pytest.raises(storage.StorageError):
            recorder.close()  # the pipeline's failure is reported once more
    assert _outside(storage_url).state == TrialState.COMPLETE
    with storage.session_scope(storage_url) as session:
        assert session.get(storage.TrialClaim, claim).state == "complete"
        assert api_queries.summary(session, job_id=job.id, number=0) is not None


def test_a_stop_request_is_seen_at_the_end_of_a_long_epoch(storage_url: str, make_job: Callable) -> None:
    _job, _claim, _study, trial, recorder = _running(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    with storage.session_scope(storage_url) as session:
        storage.request_stop(session, "s")
    time.sleep(epochs.WAIT_FOR_REPLY_AFTER_S * 2)  # an epoch that took this long waits for its reply
    outcome = recorder.epoch(1, ROWS)
    assert outcome is not None and outcome.job_status == "stopping"
    recorder.close()
    storage.optuna_storage(storage_url).release(trial._trial_id)


def test_a_trial_failed_elsewhere_is_reported_and_not_written(storage_url: str, make_job: Callable) -> None:
    job, _claim, _study, trial, recorder = _running(storage_url, make_job)
    recorder.start()
    plain = optuna.storages.RDBStorage(storage.normalize_url(storage_url))
    plain.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    plain.engine.dispose()
    trial.report(0.5, 1)
    recorder.epoch(0, ROWS)
    outcome = recorder.close()
    assert outcome is not None and not outcome.trial_running
    assert _outside(storage_url).intermediate_values == {}
    assert _curve_epochs(storage_url, job.id) == [0]  # mtl-tune's own rows record what was trained
    storage.optuna_storage(storage_url).release(trial._trial_id)


@pytest.mark.postgres
@pytest.mark.timeout(60)  # a worker that waited for each epoch would hang here until the lock is released
def test_on_postgresql_epochs_do_not_wait_for_the_database(pg_url: str) -> None:
    """While another transaction blocks the writes, short epochs go on; ``close`` waits for all of them."""
    job, claim, _study, trial, recorder = _running(pg_url, _maker(pg_url))
    recorder.start()
    recorder.close()  # the start is written
    recorder = TrialRecorder(
        pg_url, recorder.rdb, job_id=job.id, claim_id=claim, trial_id=trial._trial_id, trial_number=0
    )
    with psycopg.connect(ADMIN_DSN.replace("dbname=postgres", f"dbname={make_url(pg_url).database}")) as blocker:
        blocker.execute("LOCK TABLE epoch_metrics IN EXCLUSIVE MODE")
        start = time.perf_counter()
        for epoch in range(5):
            trial.report(0.5, epoch + 1)
            recorder.epoch(epoch, ROWS)
        sent = time.perf_counter() - start
        assert _curve_epochs(pg_url, job.id) == []  # nothing written yet: the lock holds the first epoch
        closed = threading.Event()
        closer = threading.Thread(target=lambda: (recorder.close(), closed.set()))
        closer.start()
        assert not closed.wait(0.3)  # close waits for the replies
        blocker.rollback()  # releases the lock
        closer.join(10)
    assert closed.is_set()
    assert sent < 0.3
    assert _curve_epochs(pg_url, job.id) == [0, 1, 2, 3, 4]
    assert _outside(pg_url).intermediate_values == dict.fromkeys(range(1, 6), 0.5)
    recorder.rdb.release(trial._trial_id)


@pytest.mark.postgres
def test_on_postgresql_a_failed_epoch_is_its_own_transaction(pg_url: str) -> None:
    """Each pipelined epoch commits on its own: one that fails leaves the others written (before and after it),
    gives its Optuna writes back to the trial, and is raised; the final state is then written on a new
    connection, with what the failed epoch gave back."""
    job, claim, study, trial, recorder = _running(pg_url, _maker(pg_url))
    recorder.start()
    trial.report(0.9, 1)
    recorder.epoch(0, ROWS)
    trial.report(0.8, 2)
    with suppress(storage.StorageError):
        recorder.epoch(0, ROWS)  # epoch 0 again: its metric rows already exist
    trial.report(0.7, 3)
    with suppress(storage.StorageError):
        recorder.epoch(1, ROWS)
    with pytest.raises(storage.StorageError, match=r"(?i)unique|duplicate"):
        recorder.close()
    assert _curve_epochs(pg_url, job.id) == [0, 1]
    assert _outside(pg_url).intermediate_values == {1: 0.9, 3: 0.7}
    assert recorder.rdb._held[trial._trial_id].pending.intermediate == {2: 0.8}
    study.tell(trial, 0.5)
    assert recorder.finished
    outside = _outside(pg_url)
    assert outside.state == TrialState.COMPLETE and outside.intermediate_values == {1: 0.9, 2: 0.8, 3: 0.7}
    with storage.session_scope(pg_url) as session:
        assert session.get(storage.TrialClaim, claim).state == "complete"
    with storage.get_engine(pg_url).connect() as connection:  # the pool is usable afterwards
        assert connection.execute(select(1)).scalar() == 1


@pytest.mark.postgres
def test_on_postgresql_a_connection_that_died_during_a_long_epoch_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the pool pings a connection that sat idle, the trial checks its own after a long epoch."""
    monkeypatch.setattr(storage._engine, "PING_AFTER_IDLE_S", 0.05)
    job, claim, study, trial, recorder = _running(pg_url, _maker(pg_url))
    recorder.start()
    recorder.epoch(0, ROWS)
    assert recorder._pipeline is not None
    recorder._pipeline.wait()
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:  # a restarted server, an idle timeout
        admin.execute("SELECT pg_terminate_backend(%s)", (recorder._pipeline._pgconn.backend_pid,))
    time.sleep(0.2)  # a long epoch
    recorder.epoch(1, ROWS)
    study.tell(trial, 0.5)
    recorder.close()
    assert recorder.finished
    assert _curve_epochs(pg_url, job.id) == [0, 1]
    with storage.session_scope(pg_url) as session:
        assert session.get(storage.TrialClaim, claim).state == "complete"


def test_a_trial_whose_study_job_was_deleted_still_finishes(storage_url: str, make_job: Callable) -> None:
    """Its claim and metrics went with the job; Optuna's trial is still told, not left running."""
    _job, _claim, study, trial, recorder = _running(storage_url, make_job)
    recorder.start()
    recorder.epoch(0, ROWS)
    with storage.session_scope(storage_url) as session:
        storage.delete_job(session, "s")
    with suppress(storage.StorageError, sqlalchemy.exc.IntegrityError):
        recorder.epoch(1, ROWS)  # its metric rows have no job any more
    study.tell(trial, state=TrialState.FAIL)
    with suppress(storage.StorageError):
        recorder.close()
    assert _outside(storage_url).state == TrialState.FAIL


@pytest.mark.postgres
def test_on_postgresql_a_trial_leaves_no_prepared_statement_on_its_pooled_connection(pg_url: str) -> None:
    """psycopg deallocates every prepared statement of a connection that rolls back: a trial prepares its
    statements for itself and closes them before its connection goes back to the pool."""
    job, claim, _study, trial, recorder = _running(pg_url, _maker(pg_url))
    recorder.start()
    recorder.epoch(0, ROWS)
    assert recorder._pipeline is not None
    pid = recorder._pipeline._pgconn.backend_pid
    recorder.close()
    engine = storage.get_engine(pg_url)
    held = [engine.connect() for _ in range(engine.pool.checkedin())]  # type: ignore[attr-defined]
    try:
        (used,) = [c for c in held if c.connection.driver_connection.pgconn.backend_pid == pid]  # type: ignore[union-attr]
        assert used.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar() == 0
        used.exec_driver_sql("DEALLOCATE ALL")
    finally:
        for c in held:
            c.close()
    recorder = TrialRecorder(
        pg_url, recorder.rdb, job_id=job.id, claim_id=claim, trial_id=trial._trial_id, trial_number=0
    )
    recorder.epoch(1, ROWS)
    recorder.close()
    assert _curve_epochs(pg_url, job.id) == [0, 1]
    recorder.rdb.release(trial._trial_id)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("cast", "values"),
    [
        ("text[]", ['a"b', "c\\d", "e,f {g}", "", "NULL", "é ü", "x'y", None]),
        ("float8[]", [1.5, None, float("inf"), float("-inf"), 1e-300, 3, -0.0, 1 / 3]),
        ("int[]", [0, -7, 2**31 - 1]),
        ("text[]", []),
    ],
)
def test_pipelined_lists_reach_postgresql_unchanged(pg_url: str, cast: str, values: list[object]) -> None:
    from storage._pipeline import array_literal

    with storage.get_engine(pg_url).connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        assert driver.execute(f"SELECT %s::{cast}", (array_literal(values),)).fetchone()[0] == values
        nan = driver.execute("SELECT (%s::float8[])[1]", (array_literal([float("nan")]),)).fetchone()[0]
        assert nan != nan


@pytest.mark.postgres
def test_without_pipeline_mode_each_transaction_is_written_in_turn(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A libpq older than 14 has no pipeline mode: claims, trials and epochs then wait for each reply."""
    monkeypatch.setattr(psycopg.capabilities, "has_pipeline", lambda *args, **kwargs: False)
    job, claim, study, trial, recorder = _running(pg_url, _maker(pg_url))
    assert recorder._pipeline is None
    recorder.start()
    trial.report(0.4, 1)
    outcome = recorder.epoch(0, ROWS)
    assert outcome is not None and outcome.trial_running and outcome.job_status == "running"
    study.tell(trial, 0.3)
    recorder.close()
    assert recorder.finished
    assert _curve_epochs(pg_url, job.id) == [0]
    outside = _outside(pg_url)
    assert outside.state == TrialState.COMPLETE and outside.intermediate_values == {1: 0.4}
    with storage.session_scope(pg_url) as session:
        assert session.get(storage.TrialClaim, claim).state == "complete"
