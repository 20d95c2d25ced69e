"""Held trials: their Optuna writes reach the database per epoch and with the final state, never call by call,
while every read in the holding process already sees them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event

import storage
from storage._optuna_tables import Writes, finish_trial
from storage._worker_storage import WorkerStorage
from storage.epochs import EpochOutcome, TrialRecorder
from tests.storage.helpers import outside_trial, trial_id

ROWS = [{"task": "a", "train_loss": 0.5, "val_loss": 0.4, "metric": 0.3, "weight": 1.0}]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _held_trial(url: str, name: str = "s") -> tuple[WorkerStorage, optuna.Study, optuna.Trial]:
    rdb = storage.worker_storage(url)
    study = optuna.create_study(study_name=name, storage=rdb)
    trial = study.ask()
    rdb.hold(trial_id(url, trial, name), rdb.get_study_id_from_name(name))
    return rdb, study, trial


def _epoch(url: str, rdb: WorkerStorage, job: storage.StudyJob, trial: optuna.Trial, epoch: int = 0) -> EpochOutcome:
    """One epoch's transaction, waited for (the claim is not used by epochs)."""
    recorder = TrialRecorder(
        url,
        rdb,
        job_id=job.id,
        job_created_at=job.created_at,
        claim_id=0,
        trial_id=trial_id(url, trial),
        trial_number=0,
    )
    recorder.epoch(epoch, ROWS)
    recorder.flush()
    assert recorder.outcome is not None
    return recorder.outcome


@contextmanager
def _commits(url: str) -> Iterator[Callable[[], int]]:
    """Counts commits on every engine of the process while the block runs."""
    count = [0]

    def on_commit(_connection: object) -> None:
        count[0] += 1

    from sqlalchemy.engine import Engine

    event.listen(Engine, "commit", on_commit)
    try:
        yield lambda: count[0]
    finally:
        event.remove(Engine, "commit", on_commit)


def test_held_writes_wait_for_a_flush_but_reads_here_see_them(storage_url: str, make_job: Callable) -> None:
    job = make_job(study_name="s")
    rdb, study, trial = _held_trial(storage_url)
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("config", {"x": x})
    trial.report(0.7, 1)

    outside = outside_trial(storage_url, "s")
    assert outside.params == {} and outside.intermediate_values == {} and outside.user_attrs == {}
    here = study.trials[-1]
    assert here.params == {"x": x} and here.intermediate_values == {1: 0.7} and here.user_attrs == {"config": {"x": x}}
    assert rdb.get_trial(trial_id(storage_url, trial)).params == {"x": x}

    outcome = _epoch(storage_url, rdb, job, trial)
    assert outcome.trial_running and outcome.job_status == "queued"
    outside = outside_trial(storage_url, "s")
    assert outside.params == {"x": x} and outside.intermediate_values == {1: 0.7}
    assert outside.user_attrs == {"config": {"x": x}}

    trial.report(0.5, 2)
    trial.set_user_attr("tasks", {"a": 0.4})
    study.tell(trial, 0.5)  # the rest goes with the final state, in the same transaction
    outside = outside_trial(storage_url, "s")
    assert outside.state == TrialState.COMPLETE and outside.value == 0.5
    assert outside.intermediate_values == {1: 0.7, 2: 0.5} and outside.user_attrs["tasks"] == {"a": 0.4}
    assert trial_id(storage_url, trial) not in rdb._held
    # What this process remembers of the finished trial is exactly what the database holds.
    assert repr(rdb.get_trial(trial_id(storage_url, trial))) == repr(outside)
    assert repr(rdb.get_all_trials(rdb.get_study_id_from_name("s"))) == repr([outside])


def test_writes_before_the_hold_are_not_lost(storage_url: str) -> None:
    """A sampler may tag a new trial before the worker holds it (NSGA-II records its generation)."""
    rdb = storage.worker_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=rdb)
    trial = study.ask()
    rdb.set_trial_system_attr(trial_id(storage_url, trial), "generation", 3)
    rdb.hold(trial_id(storage_url, trial), rdb.get_study_id_from_name("s"))
    trial.report(0.5, 1)
    assert rdb.get_trial(trial_id(storage_url, trial)).system_attrs["generation"] == 3
    study.tell(trial, 0.5)
    assert outside_trial(storage_url, "s").system_attrs["generation"] == 3
    assert rdb.get_trial(trial_id(storage_url, trial)).system_attrs["generation"] == 3


def test_one_commit_per_epoch_with_the_metrics_and_the_intermediate_value(storage_url: str, make_job: Callable) -> None:
    job = make_job(study_name="s")
    rdb, study, trial = _held_trial(storage_url)
    trial.suggest_float("x", 0.0, 1.0)
    with _commits(storage_url) as commits:
        for epoch in range(5):
            trial.report(1.0 / (epoch + 1), epoch + 1)
            _epoch(storage_url, rdb, job, trial, epoch)
        assert commits() == 5
    assert len(outside_trial(storage_url, "s").intermediate_values) == 5
    with storage.session_scope(storage_url) as session:
        assert len(storage.trial_curves(session, job_id=job.id, trial_number=0)) == 5
    study.tell(trial, 0.2)


def test_a_trial_finished_elsewhere_is_reported_and_not_written(storage_url: str, make_job: Callable) -> None:
    job = make_job(study_name="s")
    rdb, _study, trial = _held_trial(storage_url)
    trial.report(0.9, 1)
    # Another worker's stale-trial check fails it (its plain storage writes the state directly).
    plain = optuna.storages.RDBStorage(storage.normalize_url(storage_url))
    plain.set_trial_state_values(trial_id(storage_url, trial), TrialState.FAIL)
    plain.engine.dispose()
    outcome = _epoch(storage_url, rdb, job, trial)
    assert not outcome.trial_running
    assert outside_trial(storage_url, "s").intermediate_values == {}


def test_a_held_parameter_keeps_optunas_distribution_check(storage_url: str) -> None:
    rdb = storage.worker_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=rdb)
    study.optimize(lambda t: t.suggest_categorical("opt", ["adam", "sgd"]) == "adam", n_trials=1)
    # A fresh process: nothing cached, so the recorded distribution is looked up.
    storage.dispose_engines()
    rdb = storage.worker_storage(storage_url)
    study = optuna.load_study(study_name="s", storage=rdb)
    trial = study.ask()
    rdb.hold(trial_id(storage_url, trial), rdb.get_study_id_from_name("s"))
    with pytest.raises(ValueError, match="distribution"):
        trial.suggest_float("opt", 0.0, 1.0)
    study.tell(trial, state=TrialState.FAIL)


def test_successive_halving_decides_as_on_optunas_own_storage(storage_url: str) -> None:
    """The pruner reads the rung values of held and finished trials, and its rung records are kept."""
    values = (0.1, 0.2, 0.9, 0.05, 0.5, 0.01, 0.7)

    def decide(study: optuna.Study, hold: Callable[[optuna.Trial], None]) -> list[bool]:
        decisions = []
        for value in values:
            trial = study.ask()
            hold(trial)
            trial.report(value, 1)
            decisions.append(trial.should_prune())
            if decisions[-1]:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, value)
        return decisions

    def pruner() -> optuna.pruners.BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)

    rdb = storage.worker_storage(storage_url)
    held = decide(
        optuna.create_study(study_name="s", storage=rdb, pruner=pruner()),
        lambda t: rdb.hold(trial_id(storage_url, t), rdb.get_study_id_from_name("s")),
    )
    assert held == decide(optuna.create_study(pruner=pruner()), lambda t: None)
    assert any(held) and not all(held)
    stored = optuna.load_study(study_name="s", storage=storage.normalize_url(storage_url)).trials
    assert repr(rdb.get_all_trials(rdb.get_study_id_from_name("s"))) == repr(stored)
    assert all("completed_rung_0" in t.system_attrs for t in stored)
    assert [t.state == TrialState.PRUNED for t in stored] == held


def test_reads_build_the_same_trials_as_optunas_storage(storage_url: str) -> None:
    """Every state, every distribution kind, odd values: ``get_trial`` and ``get_all_trials`` agree with
    Optuna's own ``RDBStorage``, field by field, and a missing trial or study is a ``KeyError`` on both."""
    rdb = storage.worker_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=rdb, directions=["minimize", "maximize"])

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 1e-3, 1.0, log=True)
        trial.suggest_int("n", 1, 9, step=2)
        choice = trial.suggest_categorical("c", ["a", None, 3])
        trial.set_user_attr("nested", {"list": [1, 2.5, "z"], "none": None})
        if choice is None:
            raise RuntimeError("fails")
        return x, float("inf") if choice == 3 else -x

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the failing trials are meant to fail
    for choice in ("a", None, 3):  # every choice once, whatever the random ones pick: a failed trial among them
        study.enqueue_trial({"c": choice})
    study.optimize(objective, n_trials=8, catch=(RuntimeError,))
    running = study.ask()
    running.suggest_float("x", 1e-3, 1.0, log=True)
    study.enqueue_trial({"x": 0.5}, user_attrs={"queued": True})
    single = optuna.create_study(study_name="single", storage=rdb)
    pruned = single.ask()
    for step, value in enumerate((1.0, float("nan"), float("inf"), -float("inf"))):
        pruned.report(value, step)
    single.tell(pruned, state=TrialState.PRUNED)

    plain = optuna.storages.RDBStorage(storage.normalize_url(storage_url))
    try:
        for name in ("s", "single"):
            study_id = plain.get_study_id_from_name(name)
            expected = plain.get_all_trials(study_id)
            assert repr(rdb.get_all_trials(study_id)) == repr(expected)  # repr: NaN is not equal to itself
            for state in (TrialState.WAITING, TrialState.FAIL, TrialState.COMPLETE):
                wanted = [t for t in expected if t.state == state]
                assert repr(rdb.get_all_trials(study_id, states=(state,))) == repr(wanted)
            for trial in expected:
                assert repr(rdb.get_trial(trial_id(storage_url, trial, name))) == repr(trial)
        assert {t.state for t in plain.get_all_trials(plain.get_study_id_from_name("s"))} == {
            TrialState.COMPLETE,
            TrialState.FAIL,
            TrialState.WAITING,
            TrialState.RUNNING,
        }
        single_id = plain.get_study_id_from_name("single")
        missing = max(trial_id(storage_url, t, "single") for t in plain.get_all_trials(single_id)) + 100
        for reader in (plain, rdb):
            with pytest.raises(KeyError):
                reader.get_trial(missing)
            with pytest.raises(KeyError):
                reader.get_all_trials(10_000)
    finally:
        plain.engine.dispose()


def test_an_epoch_is_all_or_nothing(storage_url: str, make_job: Callable) -> None:
    """A write that fails takes the whole epoch with it; the trial's pending writes are kept for its final state."""
    job = make_job(study_name="s")
    rdb, _study, trial = _held_trial(storage_url)
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.7, 1)
    # Someone else recorded parameter x of this trial already: the epoch's insert of x must fail.
    plain = optuna.storages.RDBStorage(storage.normalize_url(storage_url))
    plain.set_trial_param(trial_id(storage_url, trial), "x", 0.1, optuna.distributions.FloatDistribution(0.0, 1.0))
    plain.engine.dispose()
    recorder = TrialRecorder(
        storage_url, rdb, job_id=job.id, job_created_at=job.created_at, claim_id=0,
        trial_id=trial_id(storage_url, trial), trial_number=0,
    )  # fmt: skip
    recorder.epoch(0, ROWS)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        recorder.flush()
    recorder.flush()  # raised once
    with storage.session_scope(storage_url) as session:
        assert storage.trial_curves(session, job_id=job.id, trial_number=0) == []
    assert outside_trial(storage_url, "s").intermediate_values == {}
    assert recorder.unwritten.intermediate == {1: 0.7} and recorder.outcome is None
    rdb.release(trial_id(storage_url, trial))


def test_a_holders_finisher_writes_the_final_state(storage_url: str) -> None:
    """The holder of a trial may write its final state itself (a worker's ``TrialRecorder`` writes its claim
    and summary along): it is given the pending writes and the trial as it will be."""
    rdb, study, trial = _held_trial(storage_url)
    trial.report(0.5, 1)
    seen: list[optuna.trial.FrozenTrial] = []
    held = trial_id(storage_url, trial)

    def broken(writes: object, finished: optuna.trial.FrozenTrial) -> bool:
        raise RuntimeError("the summary could not be written")

    def finisher(writes: Writes, finished: optuna.trial.FrozenTrial) -> bool:
        seen.append(finished)
        with storage.get_engine(storage_url).begin() as connection:
            return finish_trial(connection, held, finished, writes)

    rdb.hold(held, rdb.get_study_id_from_name("s"), finisher=broken)
    with pytest.raises(RuntimeError, match="summary"):
        study.tell(trial, 0.25)
    assert outside_trial(storage_url, "s").state == TrialState.RUNNING
    assert rdb._held[held].pending.intermediate == {1: 0.5}  # kept for the next try

    rdb.hold(held, rdb.get_study_id_from_name("s"), finisher=finisher)
    told = study.tell(trial, 0.25)
    outside = outside_trial(storage_url, "s")
    assert outside.state == TrialState.COMPLETE and outside.intermediate_values == {1: 0.5}
    assert [(t.state, t.values, t.intermediate_values) for t in seen] == [(TrialState.COMPLETE, [0.25], {1: 0.5})]
    assert repr(seen[0]) == repr(outside) == repr(told)


def test_a_finisher_that_finds_the_trial_finished_elsewhere_is_refused(storage_url: str) -> None:
    rdb, _study, trial = _held_trial(storage_url)
    rdb.hold(trial_id(storage_url, trial), rdb.get_study_id_from_name("s"), finisher=lambda writes, finished: False)
    plain = optuna.storages.RDBStorage(storage.normalize_url(storage_url))
    plain.set_trial_state_values(trial_id(storage_url, trial), TrialState.FAIL)
    plain.engine.dispose()
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        rdb.set_trial_state_values(trial_id(storage_url, trial), TrialState.COMPLETE, [0.25])
    rdb.release(trial_id(storage_url, trial))


def test_trials_created_at_once_get_unique_consecutive_numbers(storage_url: str) -> None:
    """Trial creation locks the study row, as Optuna's does: workers asking at once never share a number."""
    optuna.create_study(study_name="s", storage=storage.worker_storage(storage_url))
    url = storage.normalize_url(storage_url)

    def ask_five() -> list[int]:
        own = WorkerStorage(url, optuna.storages.RDBStorage(url, engine_kwargs=storage._engine.engine_kwargs(url)))
        try:
            study = optuna.load_study(study_name="s", storage=own)
            return [study.ask().number for _ in range(5)]
        finally:
            own.rdb.engine.dispose()

    with ThreadPoolExecutor(4) as pool:
        numbers = [n for batch in pool.map(lambda _: ask_five(), range(4)) for n in batch]
    assert sorted(numbers) == list(range(20))
    trials = optuna.load_study(study_name="s", storage=storage.worker_storage(storage_url)).trials
    assert [t.number for t in trials] == list(range(20))
    assert all(t.state == TrialState.RUNNING and t.datetime_start is not None for t in trials)


def test_a_studys_directions_are_read_once_until_it_is_forgotten(storage_url: str) -> None:
    rdb = storage.worker_storage(storage_url)
    study_id = rdb.create_new_study([optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE], "d")
    statements: list[str] = []

    def on_execute(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        first = rdb.get_study_directions(study_id)
        reads = len(statements)
        for _ in range(5):  # Hyperband builds a study object per bracket at every rung
            assert rdb.get_study_directions(study_id) == first
        assert reads > 0 and len(statements) == reads
        rdb.forget_study("d")  # deleted and created again elsewhere: read again
        assert rdb.get_study_directions(study_id) == first and len(statements) > reads
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
    assert [d.name for d in first] == ["MAXIMIZE", "MINIMIZE"]
