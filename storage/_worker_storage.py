"""A worker's Optuna storage: Optuna's ``RDBStorage`` by composition, with the writes of the trials it runs held.

Optuna's ``RDBStorage`` commits every ``suggest_*``, ``report``, ``set_user_attr`` and pruner bookkeeping call on
its own: a 20-epoch trial costs about 60 commits. Here a trial the worker *holds* keeps those writes in memory;
they reach the database in the trial's own transactions (its holder ``take``s them once per epoch, for mtl-tune's
epoch rows, and writes the rest with the trial's final state, in its ``finisher``, with the claim and the summary).

Everything else goes to the wrapped ``RDBStorage`` through Optuna's public storage interface. Trials are created
and read with Core statements (``storage._optuna_tables``, the one module that knows Optuna's tables), as Optuna
would write and build them. Reads see a held trial's unwritten values, so samplers and pruners in this process
behave exactly as on the plain storage; finished trials, which never change, are read from the database once.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Container, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from storage import _optuna_tables as tables
from storage._engine import read_connection, translate_errors, write_transaction
from storage._optuna_tables import Writes

# Writes a held trial's final state for its holder: given the writes still pending and the trial as it will then
# be (state, values and completion time set), it writes them in one transaction, with whatever the holder records
# along, and says whether the trial was still running (if not, nothing is written).
Finisher = Callable[[Writes, FrozenTrial], bool]


@dataclass
class _Held:
    """A trial this process runs: its unwritten writes and the trial as it stands (nobody else writes it)."""

    study_id: int
    known: FrozenTrial
    pending: Writes = field(default_factory=Writes)
    finisher: Finisher | None = None

    def write(self, writes: Writes) -> None:
        self.pending = self.pending | writes
        self.known = writes.applied_to(self.known)

    def take(self) -> Writes:
        taken, self.pending = self.pending, Writes()
        return taken


class WorkerStorage(BaseStorage):
    """Optuna's storage interface over ``rdb``, with held trials' writes kept for their own transactions."""

    def __init__(self, url: str, rdb: RDBStorage) -> None:
        with translate_errors(url):
            tables.check_schema(rdb)
        self.url, self.rdb = url, rdb
        self._lock = threading.Lock()
        self._held: dict[int, _Held] = {}
        self._created: dict[int, tuple[int, FrozenTrial]] = {}  # the latest trial created here: (study id, trial)
        self._finished: dict[int, tuple[int, FrozenTrial]] = {}  # finished trials read or told: (study id, trial)
        self._study_ids: dict[str, int] = {}
        # A study's directions never change; Hyperband builds a study object (which reads them) for every bracket at
        # every rung, one query each on the wrapped storage.
        self._directions: dict[int, list[StudyDirection]] = {}
        # The first distribution recorded per (study, parameter): Optuna checks each new one against it.
        self._distributions: dict[tuple[int, str], BaseDistribution] = {}

    # -- studies: Optuna's, except that a name's id and a study's directions are remembered (Hyperband asks for
    # them at every rung) ---------------------------------------------------------------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self.rdb.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self.forget_study_id(study_id)
        self.rdb.delete_study(study_id)

    def get_study_id_from_name(self, study_name: str) -> int:
        study_id = self._study_ids.get(study_name)
        if study_id is None:
            study_id = self._study_ids[study_name] = self.rdb.get_study_id_from_name(study_name)
        return study_id

    def forget_study(self, study_name: str) -> None:
        """Forget what this process kept of a study of that name and of its id: another process may have deleted
        it and created another under the same name, or under the same id (SQLite hands a deleted row's id out
        again)."""
        self._study_ids.pop(study_name, None)
        with suppress(KeyError):
            self.forget_study_id(self.get_study_id_from_name(study_name))

    def forget_study_id(self, study_id: int) -> None:
        with self._lock:
            self._study_ids = {name: i for name, i in self._study_ids.items() if i != study_id}
            self._distributions = {key: d for key, d in self._distributions.items() if key[0] != study_id}
            self._directions.pop(study_id, None)
            self._finished = {t: kept for t, kept in self._finished.items() if kept[0] != study_id}

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.rdb.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.rdb.set_study_system_attr(study_id, key, value)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.rdb.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        directions = self._directions.get(study_id)
        if directions is None:
            directions = self._directions[study_id] = self.rdb.get_study_directions(study_id)
        return list(directions)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.rdb.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.rdb.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[Any]:  # Optuna's FrozenStudy, which it does not export
        return self.rdb.get_all_studies()

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self.rdb.get_n_trials(study_id, state)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        """From memory for a trial created or held here (a worker asks for the trial ``ask`` gave it)."""
        with self._lock:
            mine = [*self._created.items(), *((t, (h.study_id, h.known)) for t, h in self._held.items())]
        for trial_id, (study, trial) in mine:
            if study == study_id and trial.number == trial_number:
                return trial_id
        return self.rdb.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def remove_session(self) -> None:
        self.rdb.remove_session()

    # -- trials ------------------------------------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:  # enqueued and retried trials: Optuna's own path copies the template
            trial_id = self.rdb.create_new_trial(study_id, template_trial)
            self._forget(trial_id)
            return trial_id
        with write_transaction(self.url) as connection:
            trial_id, trial = tables.create_running_trial(connection, study_id)
        self._forget(trial_id)
        with self._lock:
            self._created = {trial_id: (study_id, trial)}  # ``ask`` reads it right away; then it is held, or gone
        return trial_id

    def _forget(self, trial_id: int) -> None:
        """A trial created or started here is new, even under an id this process saw finish (SQLite hands a
        deleted trial's id out again)."""
        with self._lock:
            self._finished.pop(trial_id, None)
            self._created.pop(trial_id, None)

    def hold(self, trial_id: int, study_id: int, finisher: Finisher | None = None) -> None:
        """Keep the writes of this running trial in memory until they are taken (``take``) or its final state.

        ``finisher`` writes the final state instead of this storage, so that what the holder records with it (a
        worker closes its claim) commits with Optuna's state or not at all.
        """
        with self._lock:
            held = self._held.get(trial_id)
            created = self._created.pop(trial_id, None)
        if held is None:
            held = _Held(study_id, created[1] if created else self.rdb.get_trial(trial_id))
        held.finisher = finisher
        with self._lock:
            self._held[trial_id] = held

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.pop(trial_id, None)

    def take(self, trial_id: int) -> Writes:
        """The held trial's writes not taken yet, for its holder to write (none when it is not held)."""
        held = self._held.get(trial_id)
        return held.take() if held is not None else Writes()

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        if (held := self._held_or_forget(trial_id)) is None:
            return self.rdb.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        check_distribution_compatibility(self._reference(held.study_id, param_name, distribution), distribution)
        held.write(Writes(params={param_name: (param_value_internal, distribution)}))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        if (held := self._held_or_forget(trial_id)) is None:
            return self.rdb.set_trial_intermediate_value(trial_id, step, intermediate_value)
        held.write(Writes(intermediate={step: intermediate_value}))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if (held := self._held_or_forget(trial_id)) is None:
            return self.rdb.set_trial_user_attr(trial_id, key, value)
        json.dumps(value)  # refuse what cannot be stored now, as Optuna would, not at the next flush
        held.write(Writes(user_attrs={key: value}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if (held := self._held_or_forget(trial_id)) is None:
            return self.rdb.set_trial_system_attr(trial_id, key, value)
        json.dumps(value)
        held.write(Writes(system_attrs={key: value}))

    def _held_or_forget(self, trial_id: int) -> _Held | None:
        """The trial held here; or None, and a write to a trial not held (a sampler tagging it, say) makes the copy
        kept at its creation stale."""
        if (held := self._held.get(trial_id)) is None:
            with self._lock:
                self._created.pop(trial_id, None)
        return held

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """A held trial's final state, values and pending writes in one transaction (its holder's ``finisher``,
        or ``finish_trial``); the trial is released. Any other change is Optuna's (``ask`` starting a waiting
        trial, under an id this process may have seen finish before a delete)."""
        held = self._held.get(trial_id)
        if held is None or not state.is_finished():
            self._forget(trial_id)
            return self.rdb.set_trial_state_values(trial_id, state, values)
        finished = Writes().applied_to(held.known)
        finished.state, finished.values = state, None if values is None else [float(v) for v in values]
        finished.datetime_complete = datetime.now(UTC).astimezone().replace(tzinfo=None)
        # The pending writes stay held until the final state is written: a finisher that fails leaves them.
        finisher = held.finisher or functools.partial(self._finish, trial_id)
        written = finisher(held.pending, Writes().applied_to(finished))
        if not written:  # no longer running: refused as Optuna refuses it, and nothing of it was written
            with read_connection(self.url) as connection:
                current = tables.trial_state(connection, trial_id)
            if current is None or not current.is_finished():  # deleted (its id may be another trial's now)
                raise KeyError(f"No trial with trial_id {trial_id} exists.")
            self.check_trial_is_updatable(trial_id, current)  # finished elsewhere: Optuna's own error
            raise ValueError(f"trial {trial_id} is {current.name}, not running")
        with self._lock:
            self._finished[trial_id] = (held.study_id, finished)
            self._held.pop(trial_id, None)
        return True

    def _finish(self, trial_id: int, writes: Writes, trial: FrozenTrial) -> bool:
        with write_transaction(self.url) as connection:
            return tables.finish_trial(connection, trial_id, trial, writes)

    def _reference(self, study_id: int, name: str, distribution: BaseDistribution) -> BaseDistribution:
        """What a parameter's new distributions must agree with: the one the study recorded first or, before any
        trial recorded it, the first one seen in this process."""
        reference = self._distributions.get((study_id, name))
        if reference is None:
            with read_connection(self.url) as connection:
                reference = tables.first_distribution(connection, study_id, name) or distribution
            self._distributions[(study_id, name)] = reference
        return reference

    # -- reads see held writes -----------------------------------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        if (kept := self._finished.get(trial_id)) is not None:
            return Writes().applied_to(kept[1])
        if (held := self._held.get(trial_id)) is not None:
            return Writes().applied_to(held.known)
        if (created := self._created.get(trial_id)) is not None:
            return Writes().applied_to(created[1])
        return self.rdb.get_trial(trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """One light query finds the study's trials; held ones and finished ones this process read before come
        from memory (copied only with ``deepcopy``, as Optuna's interface allows), only the others are loaded (what
        the pruner reads at every rung)."""
        memory = {t: kept for t, (s, kept) in self._finished.items() if s == study_id}
        memory |= {t: h.known for t, h in self._held.items() if h.study_id == study_id}
        with read_connection(self.url) as connection:
            identities = tables.trial_identities(connection, study_id, states)
            # The same id, state, number and start: the same trial, not one that took a deleted trial's id.
            from_memory = {t for t, seen in identities.items() if t in memory and tables.identity(memory[t]) == seen}
            loaded = tables.load_trials(connection, sorted(set(identities) - from_memory))
        with self._lock:
            self._finished.update({t: (study_id, trial) for t, trial in loaded.items() if trial.state.is_finished()})
        trials = [*(Writes().applied_to(memory[t]) if deepcopy else memory[t] for t in from_memory), *loaded.values()]
        return sorted(trials, key=lambda t: t.number)
