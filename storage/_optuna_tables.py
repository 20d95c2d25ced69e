"""Optuna's tables, as far as workers write and read them in their own transactions.

Optuna has no public interface for writing a running trial's rows inside another transaction (a worker commits an
epoch's metric rows with Optuna's intermediate value, and a trial's final state with its claim and summary). This
module, and only this one, knows those tables. It knows the Optuna schema versions in ``KNOWN_SCHEMAS``, checked
through Optuna's public ``RDBStorage.get_current_version`` before a worker uses them; any other is refused by name.
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import math
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Enum,
    Float,
    Insert,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from storage._engine import StorageError
from storage.claims import LOST
from storage.models import StudyJob, TrialClaim

#: Optuna's schema versions (its own Alembic revisions) whose tables this module writes as Optuna would.
KNOWN_SCHEMAS = ("v3.2.0.a",)


_ValueType = enum.Enum("_ValueType", "FINITE INF_POS INF_NEG")  # Optuna's trialvaluetype, stored by name
_StepType = enum.Enum("_StepType", "FINITE INF_POS INF_NEG NAN")  # Optuna's trialintermediatevaluetype


_meta, _DOUBLE = MetaData(), Float(precision=53)
STUDIES = Table("studies", _meta, Column("study_id", Integer, primary_key=True), Column("study_name", String(512)))
TRIALS = Table(
    "trials",
    _meta,
    Column("trial_id", Integer, primary_key=True),
    Column("number", Integer),
    Column("study_id", Integer),
    Column("state", Enum(TrialState, name="trialstate")),
    Column("datetime_start", DateTime),
    Column("datetime_complete", DateTime),
)


def _trial_table(name: str, key: str, *columns: Column[Any]) -> Table:
    """One of Optuna's per-trial tables: its own id, the trial's id, then ``columns``."""
    return Table(name, _meta, Column(key, Integer, primary_key=True), Column("trial_id", Integer), *columns)


# fmt: off
PARAMS = _trial_table("trial_params", "param_id", Column("param_name", String(512)),
                      Column("param_value", _DOUBLE), Column("distribution_json", Text))
VALUES = _trial_table("trial_values", "trial_value_id", Column("objective", Integer),
                      Column("value", _DOUBLE), Column("value_type", Enum(_ValueType, name="trialvaluetype")))
STEPS = _trial_table("trial_intermediate_values", "trial_intermediate_value_id", Column("step", Integer),
                     Column("intermediate_value", _DOUBLE),
                     Column("intermediate_value_type", Enum(_StepType, name="trialintermediatevaluetype")))
USER_ATTRS, SYSTEM_ATTRS = (
    _trial_table(name, f"{name.removesuffix('s')}_id", Column("key", String(512)), Column("value_json", Text))
    for name in ("trial_user_attributes", "trial_system_attributes")
)
# fmt: on


def check_schema(rdb: RDBStorage) -> None:
    """Refuse Optuna tables of a schema version this module does not know."""
    version = rdb.get_current_version()
    if version not in KNOWN_SCHEMAS:
        raise StorageError(
            f"Optuna's tables are at schema version {version!r}; this mtl-tune writes only {', '.join(KNOWN_SCHEMAS)} "
            "(install the Optuna version its pyproject.toml names, or an mtl-tune that knows this schema)"
        )


@dataclass
class Writes:
    """A running trial's writes that have not reached the database yet."""

    params: dict[str, tuple[float, BaseDistribution]] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.params or self.intermediate or self.user_attrs or self.system_attrs)

    def __or__(self, newer: Writes) -> Writes:
        return Writes(
            self.params | newer.params,
            self.intermediate | newer.intermediate,
            self.user_attrs | newer.user_attrs,
            self.system_attrs | newer.system_attrs,
        )

    def applied_to(self, trial: FrozenTrial) -> FrozenTrial:
        """A copy of ``trial`` with these writes applied (``trial`` itself is left alone)."""
        trial = copy.copy(trial)
        trial.params, trial.distributions = dict(trial.params), dict(trial.distributions)
        trial.user_attrs = trial.user_attrs | self.user_attrs
        trial.system_attrs = trial.system_attrs | self.system_attrs
        trial.intermediate_values = trial.intermediate_values | self.intermediate
        trial.values = None if trial.values is None else list(trial.values)
        for name, (internal, distribution) in self.params.items():
            trial.params[name] = distribution.to_external_repr(internal)
            trial.distributions[name] = distribution
        return trial


def create_running_trial(connection: Connection, study_id: int) -> tuple[int, FrozenTrial]:
    """The id and trial of a new running trial numbered after every trial of the study, in the caller's transaction
    (which commits before anyone else numbers one): the study row's lock, then an insert whose count sees every
    trial committed before it. ``KeyError``, as Optuna's, when there is no such study."""
    lock = select(STUDIES.c.study_id).where(STUDIES.c.study_id == study_id).with_for_update()
    if connection.execute(lock).scalar_one_or_none() is None:
        raise KeyError(f"No study with study_id {study_id} exists.")
    start = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as Optuna stores it
    earlier = select(func.count()).select_from(TRIALS).where(TRIALS.c.study_id == study_id).scalar_subquery()
    created = TRIALS.insert().values(number=earlier, study_id=study_id, state=TrialState.RUNNING, datetime_start=start)
    trial_id, number = connection.execute(created.returning(TRIALS.c.trial_id, TRIALS.c.number)).one()
    return trial_id, FrozenTrial(
        number=number, state=TrialState.RUNNING, value=None, values=None, datetime_start=_local(start),
        datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
        trial_id=trial_id,
    )  # fmt: skip


def write(connection: Connection, trial_id: int, writes: Writes) -> None:
    """A running trial's pending writes, one multi-row statement per table that has something to write."""
    if writes.params:
        rows = [
            {"trial_id": trial_id, "param_name": name, "param_value": internal,
             "distribution_json": distribution_to_json(distribution)}
            for name, (internal, distribution) in writes.params.items()
        ]  # fmt: skip
        connection.execute(PARAMS.insert(), rows)
    if writes.intermediate:
        rows = []
        for step, value in writes.intermediate.items():
            number, kind = _stored(value, _StepType)
            rows.append(
                {"trial_id": trial_id, "step": step, "intermediate_value": number, "intermediate_value_type": kind}
            )
        _upsert(connection, STEPS, rows, ("trial_id", "step"), ("intermediate_value", "intermediate_value_type"))
    for table, attrs in ((USER_ATTRS, writes.user_attrs), (SYSTEM_ATTRS, writes.system_attrs)):
        if attrs:
            rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
            _upsert(connection, table, rows, ("trial_id", "key"), ("value_json",))


def finish_trial(connection: Connection, trial_id: int, trial: FrozenTrial, writes: Writes) -> bool:
    """In the caller's transaction: a running trial's final state, values and pending writes, from ``trial`` as it
    now is; False (and nothing written) when the trial is not running, or is not that trial any more."""
    assert trial.datetime_complete is not None and trial.datetime_start is not None
    changed = connection.execute(
        update(TRIALS)
        .where(
            same_trial(trial_id, trial.number, utc_naive(trial.datetime_start)), TRIALS.c.state == TrialState.RUNNING
        )
        .values(state=trial.state, datetime_complete=utc_naive(trial.datetime_complete))
    )
    if changed.rowcount != 1:
        return False
    if trial.values:
        rows = [
            {"trial_id": trial_id, "objective": objective, "value": stored[0], "value_type": stored[1]}
            for objective, stored in enumerate(_stored(v, _ValueType) for v in trial.values)
        ]
        _upsert(connection, VALUES, rows, ("trial_id", "objective"), ("value", "value_type"))
    write(connection, trial_id, writes)
    return True


def same_trial(trial_id: Any, number: Any, start: Any) -> ColumnElement[bool]:
    """The row of trial ``trial_id`` only while it is still the trial numbered ``number`` that started at ``start``
    (naive UTC), not one that took its id after a delete (SQLite hands a deleted row's id out again)."""
    return and_(TRIALS.c.trial_id == trial_id, TRIALS.c.number == number, TRIALS.c.datetime_start == start)


def trial_state(connection: Connection, trial_id: int) -> TrialState | None:
    return connection.execute(select(TRIALS.c.state).where(TRIALS.c.trial_id == trial_id)).scalar_one_or_none()


def first_distribution(connection: Connection, study_id: int, name: str) -> BaseDistribution | None:
    """The distribution of parameter ``name`` as the study first recorded it, if it did."""
    query = (
        select(PARAMS.c.distribution_json)
        .join(TRIALS, TRIALS.c.trial_id == PARAMS.c.trial_id)
        .where(TRIALS.c.study_id == study_id, PARAMS.c.param_name == name)
        .limit(1)
    )
    recorded = connection.execute(query).scalar_one_or_none()
    return json_to_distribution(recorded) if recorded else None


def trial_identities(
    connection: Connection, study_id: int, states: Container[TrialState] | None
) -> dict[int, tuple[TrialState, int, datetime | None]]:
    """Each trial's id and identity (``identity``) in the study, optionally of some states only; ``KeyError``
    when there is no such study."""
    on = TRIALS.c.study_id == STUDIES.c.study_id
    if states is not None:
        on = and_(on, TRIALS.c.state.in_(list(states)))  # type: ignore[call-overload]
    query: Select[Any] = (
        select(TRIALS.c.trial_id, TRIALS.c.state, TRIALS.c.number, TRIALS.c.datetime_start)
        .select_from(STUDIES)
        .outerjoin(TRIALS, on)
        .where(STUDIES.c.study_id == study_id)
    )
    rows = connection.execute(query).all()
    if not rows:
        raise KeyError(f"No study with study_id {study_id} exists.")
    return {row[0]: (row[1], row[2], row[3]) for row in rows if row[0] is not None}


def identity(trial: FrozenTrial) -> tuple[TrialState, int, datetime | None]:
    """What tells a trial from another that took its id after a delete (SQLite hands ids out again)."""
    return trial.state, trial.number, utc_naive(trial.datetime_start) if trial.datetime_start else None


def load_trials(connection: Connection, trial_ids: Sequence[int]) -> dict[int, FrozenTrial]:
    """``FrozenTrial``s by id as Optuna builds them, from one plain query per table."""
    if not trial_ids:
        return {}
    ids = list(trial_ids)
    c = TRIALS.c
    rows = connection.execute(
        select(c.trial_id, c.number, c.state, c.datetime_start, c.datetime_complete)
        .where(c.trial_id.in_(ids))
        .order_by(c.trial_id)
    ).all()
    parts: dict[int, dict[str, Any]] = {
        row[0]: {"values": {}, "params": {}, "distributions": {}, "user": {}, "system": {}, "steps": {}} for row in rows
    }
    query = select(VALUES.c.trial_id, VALUES.c.objective, VALUES.c.value, VALUES.c.value_type)
    for trial_id, objective, value, kind in connection.execute(query.where(VALUES.c.trial_id.in_(ids))):
        parts[trial_id]["values"][objective] = _restored(value, kind)
    query = select(PARAMS.c.trial_id, PARAMS.c.param_name, PARAMS.c.param_value, PARAMS.c.distribution_json)
    for trial_id, name, internal, distribution_json in connection.execute(
        query.where(PARAMS.c.trial_id.in_(ids)).order_by(PARAMS.c.param_id)
    ):
        distribution = json_to_distribution(distribution_json)
        parts[trial_id]["params"][name] = distribution.to_external_repr(internal)
        parts[trial_id]["distributions"][name] = distribution
    for table, key in ((USER_ATTRS, "user"), (SYSTEM_ATTRS, "system")):
        attrs = select(table.c.trial_id, table.c.key, table.c.value_json).where(table.c.trial_id.in_(ids))
        for trial_id, name, value_json in connection.execute(attrs):
            parts[trial_id][key][name] = json.loads(value_json)
    query = select(STEPS.c.trial_id, STEPS.c.step, STEPS.c.intermediate_value, STEPS.c.intermediate_value_type)
    for trial_id, step, value, kind in connection.execute(query.where(STEPS.c.trial_id.in_(ids))):
        parts[trial_id]["steps"][step] = _restored(value, kind)
    trials = {}
    for trial_id, number, state, start, complete in rows:
        part = parts[trial_id]
        values = [part["values"][i] for i in sorted(part["values"])] if part["values"] else None
        trials[trial_id] = FrozenTrial(
            number=number, state=state, value=None, values=values, datetime_start=_local(start),
            datetime_complete=_local(complete), params=part["params"], distributions=part["distributions"],
            user_attrs=part["user"], system_attrs=part["system"], intermediate_values=part["steps"], trial_id=trial_id,
        )  # fmt: skip
    return trials


def _stored(value: float, kinds: type[_ValueType] | type[_StepType]) -> tuple[float | None, Any]:
    """A value as Optuna stores it: infinities (and, for intermediate values, NaN) as a type without a number."""
    if math.isnan(value) and kinds is _StepType:
        return None, _StepType.NAN
    if math.isinf(value):
        return None, kinds.INF_POS if value > 0 else kinds.INF_NEG
    return value, kinds.FINITE


def _restored(value: float | None, kind: _ValueType | _StepType) -> float:
    special = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}
    return special[kind.name] if kind.name in special else float(value)  # type: ignore[arg-type]


def _upsert(
    connection: Connection, table: Table, rows: list[dict[str, Any]], keys: tuple[str, ...], changed: tuple[str, ...]
) -> None:
    connection.execute(_upsert_statement(connection.dialect.name, table, keys, changed), rows)


@functools.cache
def _upsert_statement(dialect_name: str, table: Table, keys: tuple[str, ...], changed: tuple[str, ...]) -> Insert:
    """Built once: constructing an upsert costs more than executing it."""
    if dialect_name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"trial writes support PostgreSQL and SQLite, not {dialect_name}")
    statement = (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
    return statement.on_conflict_do_update(index_elements=list(keys), set_={c: statement.excluded[c] for c in changed})


def _local(moment: datetime | None) -> datetime | None:
    """Optuna stores naive UTC and hands out naive local time."""
    return None if moment is None else moment.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def utc_naive(moment: datetime) -> datetime:
    """A naive local time handed out by Optuna, as Optuna stores it: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class LostTrial:
    """An Optuna trial still running whose claim was lost: its worker went silent past the grace period."""

    job_id: int
    study_name: str
    trial_id: int
    number: int


def lost_trials(connection: Connection) -> list[LostTrial]:
    """Trials running in Optuna whose claim is lost and that no running claim holds, oldest first."""
    other = aliased(TrialClaim)
    live = select(other.id).where(
        other.job_id == StudyJob.id, other.trial_number == TRIALS.c.number, other.state == "running"
    )
    query = (
        select(StudyJob.id, StudyJob.study_name, TRIALS.c.trial_id, TRIALS.c.number)
        .join(TrialClaim, TrialClaim.job_id == StudyJob.id)
        .join(STUDIES, STUDIES.c.study_name == StudyJob.study_name)
        .join(TRIALS, and_(TRIALS.c.study_id == STUDIES.c.study_id, TRIALS.c.number == TrialClaim.trial_number))
        .where(TrialClaim.state == LOST, TRIALS.c.state == TrialState.RUNNING, ~live.exists())
        .distinct()
        .order_by(TRIALS.c.trial_id)
    )
    return [LostTrial(*row) for row in connection.execute(query)]
