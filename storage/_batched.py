"""Optuna's RDB storage with the writes of the trials this process runs batched into few transactions.

Optuna's ``RDBStorage`` commits every ``suggest_*``, ``report``, ``set_user_attr`` and pruner bookkeeping call on
its own, each after a few ORM look-ups: a 20-epoch trial costs about 60 commits. Here, a trial the worker
*holds* keeps those writes in memory; they reach the database in the caller's transaction (``flush``, once per
epoch, together with mtl-tune's own epoch rows) or with the trial's final state (``set_trial_state_values``,
through the holder's ``finisher`` when it has one).

Trials are created and finished with Core statements, as Optuna's ORM would write them: a running trial
numbered under the study row's lock, and a final state guarded by the trial still running. Everything else is
Optuna's: enqueued and retried trials, the waiting queue, heartbeats and stale-trial retries, and every read,
which sees a held trial's unwritten values, so samplers and pruners in this process behave exactly as on the
plain storage. Other processes see them once the epoch's transaction has committed. If a transaction that took
them fails, they are given back to the trial and go with a later transaction.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Callable, Container, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages import RDBStorage

# Optuna's table models: Optuna has no public interface for writing a held trial's rows in the trial's own
# transaction, so this module uses them, and pyproject pins Optuna to the minor range the storage tests pass on.
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, Insert, Select, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from storage._engine import get_engine

FINISHED_KEPT = 64
_MEMORY = ("_held", "_held_lock", "_distributions", "_study_ids", "_created", "_created_read", "_finished")
_PARAMS: Table = models.TrialParamModel.__table__
_INTERMEDIATE: Table = models.TrialIntermediateValueModel.__table__
_USER_ATTRS: Table = models.TrialUserAttributeModel.__table__
_SYSTEM_ATTRS: Table = models.TrialSystemAttributeModel.__table__
TRIALS: Table = models.TrialModel.__table__
_HEARTBEATS: Table = models.TrialHeartbeatModel.__table__
_VALUES: Table = models.TrialValueModel.__table__
_STUDIES: Table = models.StudyModel.__table__


@dataclass
class _Writes:
    """Writes of one trial that have not reached the database yet."""

    params: dict[str, tuple[float, BaseDistribution]] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.params or self.intermediate or self.user_attrs or self.system_attrs)

    def __or__(self, newer: _Writes) -> _Writes:
        return _Writes(
            self.params | newer.params,
            self.intermediate | newer.intermediate,
            self.user_attrs | newer.user_attrs,
            self.system_attrs | newer.system_attrs,
        )

    def applied_to(self, trial: FrozenTrial) -> FrozenTrial:
        """A copy of ``trial`` with these writes applied (``trial`` itself is left alone)."""
        trial = copy.copy(trial)
        trial.params = dict(trial.params)
        trial.distributions = dict(trial.distributions)
        for name, (internal, distribution) in self.params.items():
            trial.params[name] = distribution.to_external_repr(internal)
            trial.distributions[name] = distribution
        trial.intermediate_values = trial.intermediate_values | self.intermediate
        trial.user_attrs = trial.user_attrs | self.user_attrs
        trial.system_attrs = trial.system_attrs | self.system_attrs
        return trial


# Writes a held trial's final state for its holder: given the writes still pending and the trial as it will then
# be (state, values and completion time set), it writes them in one transaction, with whatever the holder records
# along, and says whether the trial was still running (if not, nothing is written).
Finisher = Callable[["_Writes", FrozenTrial], bool]


@dataclass
class _Held:
    """A trial this process runs: its unwritten writes and, once read, the trial as it stands.

    Nobody else writes a running trial, so after one read ``known`` plus this process's own writes is the
    trial: the pruner's reads at every rung need no database round trip.
    """

    study_id: int
    pending: _Writes = field(default_factory=_Writes)
    known: FrozenTrial | None = None
    finisher: Finisher | None = None

    def write(self, writes: _Writes) -> None:
        self.pending = self.pending | writes
        if self.known is not None:
            self.known = writes.applied_to(self.known)

    def take(self) -> _Writes:
        taken, self.pending = self.pending, _Writes()
        return taken

    def put_back(self, taken: _Writes) -> None:
        """Writes taken for a transaction that failed go back in front of anything newer."""
        self.pending = taken | self.pending

    def view(self, trial: FrozenTrial) -> FrozenTrial:
        """``trial`` as read from the database, plus the writes not flushed yet."""
        return self.pending.applied_to(trial) if self.pending else trial


class BatchedRDBStorage(RDBStorage):
    """``RDBStorage`` whose held trials write through ``flush`` and their final state, not call by call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_lock = threading.Lock()
        self._reset_memory()

    def _reset_memory(self) -> None:
        """What this process keeps of its trials and studies; a copy in another process starts empty."""
        self._held: dict[int, _Held] = {}
        # The first distribution recorded per (study, parameter): Optuna checks each new one against it.
        self._distributions: dict[tuple[int, str], BaseDistribution] = {}
        self._study_ids: dict[str, int] = {}
        self._created: dict[int, FrozenTrial] = {}
        self._created_read: dict[int, FrozenTrial] = {}
        self._finished: dict[int, FrozenTrial] = {}  # trials finished here, the latest FINISHED_KEPT

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in _MEMORY}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._held_lock = threading.Lock()
        self._reset_memory()

    def get_study_id_from_name(self, study_name: str) -> int:
        # Optuna's Hyperband builds a study object per bracket lookup, each asking for the id: several reads per
        # epoch. A name keeps its id until the study is deleted.
        study_id = self._study_ids.get(study_name)
        if study_id is None:
            study_id = self._study_ids[study_name] = super().get_study_id_from_name(study_name)
        return study_id

    def delete_study(self, study_id: int) -> None:
        self.forget_study_id(study_id)
        super().delete_study(study_id)

    def forget_study(self, study_name: str) -> None:
        """Forget what this process kept of a study of that name and of its id: another process may have deleted
        it and created another under the same name, or under the same id (SQLite hands a deleted row's id out
        again)."""
        self._study_ids.pop(study_name, None)
        with suppress(KeyError):
            self.forget_study_id(self.get_study_id_from_name(study_name))

    def forget_study_id(self, study_id: int) -> None:
        with self._held_lock:
            self._study_ids = {name: i for name, i in self._study_ids.items() if i != study_id}
            self._distributions = {key: d for key, d in self._distributions.items() if key[0] != study_id}

    def record_heartbeat(self, trial_id: int) -> None:
        # Optuna's version reads the row, locks it and reads the clock before writing: one upsert does the same.
        with self.engine.begin() as connection:
            self.write_heartbeat(trial_id, connection)

    def write_heartbeat(self, trial_id: int, connection: Connection) -> None:
        """The trial's heartbeat, in the caller's transaction (a worker sends it with its claim's)."""
        connection.execute(_heartbeat_statement(connection.dialect.name), {"trial_id": trial_id})

    # -- holding -------------------------------------------------------------------------------------------

    def hold(self, trial_id: int, study_id: int, finisher: Finisher | None = None) -> None:
        """Keep the writes of this trial (of study ``study_id``) in memory until ``flush`` or its final state.

        ``finisher`` writes the final state instead of this storage, so that what the holder records with it (a
        worker closes its claim) commits with Optuna's state or not at all.
        """
        with self._held_lock:
            created = self._created.pop(trial_id, None) or self._created_read.pop(trial_id, None)
            held = self._held.setdefault(trial_id, _Held(study_id, known=created))
            held.finisher = finisher

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # Remember a trial created running here: the worker's first read of it (``Trial()``, right after
        # ``ask`` creates it) and ``hold`` need no database round trip.
        if template_trial is None:
            trial = self._create_running_trial(study_id)
        else:  # enqueued and retried trials: Optuna's own path copies everything the template holds
            trial = super()._create_new_trial(study_id, template_trial)
        self._forget_finished(trial._trial_id)
        if trial.state == TrialState.RUNNING:
            with self._held_lock:
                self._created = {trial._trial_id: trial}  # only the latest: older ones are held or gone
        return trial

    def _create_running_trial(self, study_id: int) -> FrozenTrial:
        """What ``ask`` creates: a new running trial numbered after every trial of the study, as Optuna does.

        Optuna's version locks the study row, inserts, counts the earlier trials and updates the number through
        the ORM; here the lock and one insert that counts, in one transaction. The count is read by the insert,
        a statement after the lock, so it sees every trial committed before it: numbers stay unique.
        """
        start = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as Optuna stores it
        with self.engine.begin() as connection:
            lock = select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == study_id).with_for_update()
            if connection.execute(lock).scalar_one_or_none() is None:
                raise KeyError(f"No study with study_id {study_id} exists.")
            earlier = select(func.count()).select_from(TRIALS).where(TRIALS.c.study_id == study_id).scalar_subquery()
            created = TRIALS.insert().values(
                number=earlier, study_id=study_id, state=TrialState.RUNNING, datetime_start=start
            )
            trial_id, number = connection.execute(created.returning(TRIALS.c.trial_id, TRIALS.c.number)).one()
        return _running_trial(trial_id, number, start)

    def _forget_created(self, trial_id: int) -> None:
        """A write to a trial not held here (a sampler's ``before_trial`` tagging it, say) makes the copy
        remembered at its creation stale."""
        if trial_id in self._created or trial_id in self._created_read:
            with self._held_lock:
                self._created.pop(trial_id, None)
                self._created_read.pop(trial_id, None)

    def _forget_finished(self, trial_id: int) -> None:
        """A trial this process starts is a new trial, even under an id it saw finish: SQLite hands a deleted
        trial's id out again."""
        with self._held_lock:
            self._finished.pop(trial_id, None)
            self._created_read.pop(trial_id, None)

    def release(self, trial_id: int) -> None:
        with self._held_lock:
            self._held.pop(trial_id, None)

    def flush(self, trial_id: int, connection: Connection) -> None:
        """Write the held trial's pending writes in ``connection``'s transaction, which the caller commits.

        The caller makes sure the trial is still running (``storage.epochs.record_epoch`` reads its state in
        the same transaction).
        """
        held = self._held.get(trial_id)
        if held is None:
            return
        taken = held.take()
        try:
            _write(connection, trial_id, taken)
        except BaseException:
            held.put_back(taken)
            raise

    # -- writes of held trials -----------------------------------------------------------------------------

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        # Optuna's study wraps this storage in ``_CachedStorage``, which calls this private method (with the
        # distribution it cached for the study) rather than ``set_trial_param``.
        if (held := self._holding(trial_id)) is None:
            return super()._set_trial_param(
                trial_id, param_name, param_value_internal, distribution, previous_distribution
            )
        if previous_distribution is None:
            previous_distribution = self._reference_distribution(held.study_id, param_name, distribution)
        check_distribution_compatibility(previous_distribution, distribution)
        held.write(_Writes(params={param_name: (param_value_internal, distribution)}))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        if (held := self._holding(trial_id)) is None:
            return super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        held.write(_Writes(intermediate={step: intermediate_value}))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if (held := self._holding(trial_id)) is None:
            return super().set_trial_user_attr(trial_id, key, value)
        json.dumps(value)  # refuse what cannot be stored now, as Optuna would, not at the next flush
        held.write(_Writes(user_attrs={key: value}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if (held := self._holding(trial_id)) is None:
            return super().set_trial_system_attr(trial_id, key, value)
        json.dumps(value)
        held.write(_Writes(system_attrs={key: value}))

    def _holding(self, trial_id: int) -> _Held | None:
        """The held trial; for any other, forget the copy kept at its creation, which the write makes stale."""
        held = self._held.get(trial_id)
        if held is None:
            self._forget_created(trial_id)
        return held

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Iterable[float] | None = None) -> bool:
        """A held trial's final state, values and pending writes in one transaction (its holder's ``finisher``,
        or ``finish_trial``); the trial is released.

        Optuna's own version reads the trial through the ORM and locks it first; here the state change is
        guarded by the trial still running, and a trial that is not is refused as Optuna refuses it.
        """
        values = None if values is None else [float(v) for v in values]
        if (held := self._holding(trial_id)) is None or not state.is_finished():
            self._forget_finished(trial_id)  # ``ask`` starting a waiting trial whose id was a deleted trial's
            return super().set_trial_state_values(trial_id, state, values)
        finished = _copy(held.known) if held.known is not None else held.view(self._load_one(trial_id))
        finished.state, finished.values = state, values
        finished.datetime_complete = _local(datetime.now(UTC).replace(tzinfo=None))
        taken = held.take()
        try:
            written = (held.finisher or self._finish)(taken, _copy(finished))
        except BaseException:
            held.put_back(taken)
            raise
        if not written:  # no longer running: refused, and nothing of it was written
            held.put_back(taken)
            with self.engine.connect() as connection:
                found = connection.execute(select(TRIALS.c.state).where(TRIALS.c.trial_id == trial_id))
                trial_state = found.scalar_one_or_none()
            if trial_state is None:
                raise KeyError(f"No trial with trial_id {trial_id} exists.")
            self.check_trial_is_updatable(trial_id, trial_state)
            raise ValueError(f"trial {trial_id} is {trial_state.name}, not running")
        self._remember_finished(finished)
        self.release(trial_id)
        return True

    def _finish(self, writes: _Writes, trial: FrozenTrial) -> bool:
        with self.engine.begin() as connection:
            return finish_trial(connection, trial, writes)

    def _remember_finished(self, finished: FrozenTrial) -> None:
        """A trial finished here is kept as it now is: finished trials never change, and the worker's next
        reads (Optuna's callbacks, the next ``ask`` checking what finished) then need no trial rows."""
        with self._held_lock:
            self._finished[finished._trial_id] = finished
            while len(self._finished) > FINISHED_KEPT:
                self._finished.pop(next(iter(self._finished)))

    def _reference_distribution(self, study_id: int, name: str, distribution: BaseDistribution) -> BaseDistribution:
        """What a parameter's new distributions must agree with: the one the study recorded first or, before any
        trial recorded it, the first one seen in this process (as Optuna's own cache does)."""
        reference = self._distributions.get((study_id, name))
        if reference is None:
            with self.engine.connect() as connection:
                query = (
                    select(_PARAMS.c.distribution_json)
                    .join(TRIALS, TRIALS.c.trial_id == _PARAMS.c.trial_id)
                    .where(TRIALS.c.study_id == study_id, _PARAMS.c.param_name == name)
                    .limit(1)
                )
                recorded = connection.execute(query).scalar_one_or_none()
            reference = optuna.distributions.json_to_distribution(recorded) if recorded else distribution
            self._distributions[(study_id, name)] = reference
        return reference

    # -- reads see held writes -----------------------------------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        held = self._held.get(trial_id)
        finished = self._finished.get(trial_id)
        if finished is not None:
            return _copy(finished)
        if held is None:
            # Served from memory once (``Trial()`` reads the trial ``ask`` just created), then from the database.
            created = self._created.pop(trial_id, None)
            if created is not None:
                self._created_read = {trial_id: created}
            if created is None:
                return self._load_one(trial_id)
            return _copy(created)
        if held.known is None:
            held.known = held.view(self._load_one(trial_id))
        return _copy(held.known)

    def _load_one(self, trial_id: int) -> FrozenTrial:
        with self.engine.connect() as connection:
            trials = _load_trials(connection, [trial_id])
        if not trials:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        return trials[0]

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        """``get_all_trials`` and Optuna's ``_CachedStorage`` read through here (the pruner at every rung).

        One light query finds which trials the read covers; held trials this process knows are served from
        memory and only the others are loaded. Optuna's cache asks for new and unfinished trials only, so a
        worker alone on its study loads no trial rows at all.
        """
        running = {t: h.known for t, h in self._held.items() if h.known is not None and h.study_id == study_id}
        memory = running | self._finished
        with self.engine.connect() as connection:
            query = _trials_query(study_id, states, included_trial_ids, trial_id_greater_than)
            rows = connection.execute(query).all()
            if not rows:
                raise KeyError(f"No study with study_id {study_id} exists.")
            covered = {row[0]: row[1:] for row in rows if row[0] is not None}
            # The same id, state, number and start: the same trial, not one that took a deleted trial's id.
            from_memory = {t for t, seen in covered.items() if t in memory and _identity(memory[t]) == seen}
            trials = [_copy(memory[t]) for t in from_memory]
            loaded = _load_trials(connection, sorted(set(covered) - from_memory))
        trials += [held.view(t) if (held := self._held.get(t._trial_id)) else t for t in loaded]
        return sorted(trials, key=lambda t: t._trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        if trial_id not in self._held:
            return super().get_trial_param(trial_id, param_name)
        trial = self.get_trial(trial_id)
        return trial.distributions[param_name].to_internal_repr(trial.params[param_name])

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        if trial_id not in self._held:
            return super().get_trial_user_attrs(trial_id)
        return self.get_trial(trial_id).user_attrs

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        if trial_id not in self._held:
            return super().get_trial_system_attrs(trial_id)
        return self.get_trial(trial_id).system_attrs


@dataclass(frozen=True)
class LostTrial:
    """An Optuna trial still running whose claim was lost: its worker went silent past the grace period."""

    job_id: int
    study_name: str
    trial_id: int
    number: int


def lost_trials(url: str) -> list[LostTrial]:
    """Trials running in Optuna whose claim is lost and that no running claim holds, oldest first."""
    from storage.claims import LOST
    from storage.models import StudyJob, TrialClaim

    other = aliased(TrialClaim)
    live = select(other.id).where(
        other.job_id == StudyJob.id, other.trial_number == TRIALS.c.number, other.state == "running"
    )
    query = (
        select(StudyJob.id, StudyJob.study_name, TRIALS.c.trial_id, TRIALS.c.number)
        .join(TrialClaim, TrialClaim.job_id == StudyJob.id)
        .join(_STUDIES, _STUDIES.c.study_name == StudyJob.study_name)
        .join(TRIALS, and_(TRIALS.c.study_id == _STUDIES.c.study_id, TRIALS.c.number == TrialClaim.trial_number))
        .where(TrialClaim.state == LOST, TRIALS.c.state == TrialState.RUNNING, ~live.exists())
        .distinct()
        .order_by(TRIALS.c.trial_id)
    )
    with get_engine(url).connect() as connection:
        return [LostTrial(*row) for row in connection.execute(query)]


def _running_trial(trial_id: int, number: int, start: datetime) -> FrozenTrial:
    """A trial just created running, as Optuna builds it (``start`` in naive UTC, as stored)."""
    return FrozenTrial(
        number=number,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=_local(start),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )


def _identity(trial: FrozenTrial) -> tuple[TrialState, int, datetime | None]:
    return trial.state, trial.number, _utc_naive(trial.datetime_start) if trial.datetime_start else None


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy whose dictionaries callers may change without touching what this process remembers."""
    return _Writes().applied_to(trial)


def _write(connection: Connection, trial_id: int, held: _Writes) -> None:
    """One multi-row statement per Optuna table that has something to write."""
    if held.params:
        rows = [
            {
                "trial_id": trial_id,
                "param_name": name,
                "param_value": internal,
                "distribution_json": distribution_to_json(distribution),
            }
            for name, (internal, distribution) in held.params.items()
        ]
        connection.execute(_PARAMS.insert(), rows)
    if held.intermediate:
        stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        rows = []
        for step, value in held.intermediate.items():
            number, kind = stored(value)
            rows.append(
                {"trial_id": trial_id, "step": step, "intermediate_value": number, "intermediate_value_type": kind}
            )
        changed = ("intermediate_value", "intermediate_value_type")
        _upsert(connection, _INTERMEDIATE, rows, ("trial_id", "step"), changed)
    for table, attrs in ((_USER_ATTRS, held.user_attrs), (_SYSTEM_ATTRS, held.system_attrs)):
        if attrs:
            rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
            _upsert(connection, table, rows, ("trial_id", "key"), ("value_json",))


def finish_trial(connection: Connection, trial: FrozenTrial, writes: _Writes) -> bool:
    """In the caller's transaction: a running trial's final state, values and pending writes, from ``trial`` as
    it now is; False (and nothing written) when the trial is not running."""
    complete = trial.datetime_complete
    assert complete is not None
    changed = connection.execute(
        update(TRIALS)
        .where(TRIALS.c.trial_id == trial._trial_id, TRIALS.c.state == TrialState.RUNNING)
        .values(state=trial.state, datetime_complete=_utc_naive(complete))
    )
    if changed.rowcount != 1:
        return False
    if trial.values:
        to_stored = models.TrialValueModel.value_to_stored_repr
        rows = [
            {"trial_id": trial._trial_id, "objective": objective, "value": stored[0], "value_type": stored[1]}
            for objective, stored in enumerate(to_stored(v) for v in trial.values)
        ]
        _upsert(connection, _VALUES, rows, ("trial_id", "objective"), ("value", "value_type"))
    _write(connection, trial._trial_id, writes)
    return True


def _upsert(
    connection: Connection, table: Table, rows: list[dict[str, Any]], keys: tuple[str, ...], changed: tuple[str, ...]
) -> None:
    connection.execute(_upsert_statement(connection.dialect.name, table, keys, changed), rows)


@functools.cache
def _upsert_statement(dialect_name: str, table: Table, keys: tuple[str, ...], changed: tuple[str, ...]) -> Insert:
    """Built once: constructing an upsert costs more than executing it."""
    if dialect_name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"batched trial writes support PostgreSQL and SQLite, not {dialect_name}")
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    return statement.on_conflict_do_update(index_elements=list(keys), set_={c: statement.excluded[c] for c in changed})


@functools.cache
def _heartbeat_statement(dialect_name: str) -> Insert:
    """Insert or refresh a trial's heartbeat with the database's clock, which Optuna's stale check compares to."""
    if dialect_name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"batched trial writes support PostgreSQL and SQLite, not {dialect_name}")
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(_HEARTBEATS).values(trial_id=bindparam("trial_id"), heartbeat=func.current_timestamp())
    return statement.on_conflict_do_update(index_elements=["trial_id"], set_={"heartbeat": func.current_timestamp()})


def _trials_query(
    study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int], trial_id_greater_than: int
) -> Select[int | None, TrialState | None, int | None, datetime | None]:
    """The ids and states of the trials ``RDBStorage._get_trials`` returns for these arguments.

    One row with nulls when the study has none of them, and no row when there is no such study.
    """
    on = TRIALS.c.study_id == _STUDIES.c.study_id
    if states is not None:
        on = and_(on, TRIALS.c.state.in_(list(states)))  # type: ignore[call-overload]
    included = {t for t in included_trial_ids if t <= trial_id_greater_than}
    if included and trial_id_greater_than > -1:
        on = and_(on, or_(TRIALS.c.trial_id.in_(included), TRIALS.c.trial_id > trial_id_greater_than))
    elif trial_id_greater_than > -1:
        on = and_(on, TRIALS.c.trial_id > trial_id_greater_than)
    return (
        select(TRIALS.c.trial_id, TRIALS.c.state, TRIALS.c.number, TRIALS.c.datetime_start)
        .select_from(_STUDIES)
        .outerjoin(TRIALS, on)
        .where(_STUDIES.c.study_id == study_id)
    )


def _load_trials(connection: Connection, trial_ids: Sequence[int]) -> list[FrozenTrial]:
    """``FrozenTrial``s as ``RDBStorage`` builds them, from one plain query per table instead of the ORM's
    eager loading (which costs several milliseconds for a single trial)."""
    if not trial_ids:
        return []
    ids = list(trial_ids)
    columns = TRIALS.c
    rows = connection.execute(
        select(columns.trial_id, columns.number, columns.state, columns.datetime_start, columns.datetime_complete)
        .where(columns.trial_id.in_(ids))
        .order_by(columns.trial_id)
    ).all()
    parts: dict[int, dict[str, Any]] = {
        row[0]: {"values": {}, "params": {}, "distributions": {}, "user": {}, "system": {}, "steps": {}} for row in rows
    }
    to_value = models.TrialValueModel.stored_repr_to_value
    for trial_id, objective, value, kind in connection.execute(
        select(_VALUES.c.trial_id, _VALUES.c.objective, _VALUES.c.value, _VALUES.c.value_type).where(
            _VALUES.c.trial_id.in_(ids)
        )
    ):
        parts[trial_id]["values"][objective] = to_value(value, kind)
    for trial_id, name, internal, distribution_json in connection.execute(
        select(_PARAMS.c.trial_id, _PARAMS.c.param_name, _PARAMS.c.param_value, _PARAMS.c.distribution_json)
        .where(_PARAMS.c.trial_id.in_(ids))
        .order_by(_PARAMS.c.param_id)
    ):
        distribution = json_to_distribution(distribution_json)
        parts[trial_id]["params"][name] = distribution.to_external_repr(internal)
        parts[trial_id]["distributions"][name] = distribution
    for table, key in ((_USER_ATTRS, "user"), (_SYSTEM_ATTRS, "system")):
        query = select(table.c.trial_id, table.c.key, table.c.value_json).where(table.c.trial_id.in_(ids))
        for trial_id, name, value_json in connection.execute(query):
            parts[trial_id][key][name] = json.loads(value_json)
    to_intermediate = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    for trial_id, step, value, kind in connection.execute(
        select(
            _INTERMEDIATE.c.trial_id,
            _INTERMEDIATE.c.step,
            _INTERMEDIATE.c.intermediate_value,
            _INTERMEDIATE.c.intermediate_value_type,
        ).where(_INTERMEDIATE.c.trial_id.in_(ids))
    ):
        parts[trial_id]["steps"][step] = to_intermediate(value, kind)
    trials = []
    for trial_id, number, state, start, complete in rows:
        part = parts[trial_id]
        values = [part["values"][i] for i in sorted(part["values"])] if part["values"] else None
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=values,
                datetime_start=_local(start),
                datetime_complete=_local(complete),
                params=part["params"],
                distributions=part["distributions"],
                user_attrs=part["user"],
                system_attrs=part["system"],
                intermediate_values=part["steps"],
                trial_id=trial_id,
            )
        )
    return trials


def _local(moment: datetime | None) -> datetime | None:
    """Optuna stores naive UTC and hands out naive local time (``TrialModel.datetime_start``)."""
    return None if moment is None else moment.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def _utc_naive(moment: datetime) -> datetime:
    """A naive local time handed out by Optuna, as Optuna stores it: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)
