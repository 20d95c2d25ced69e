"""Parameter importances, computed off the request path and cached per study.

A request returns what the cache holds and, when more trials completed since, schedules a recomputation on one
background thread; it never waits for it. The computation reads the most recent complete trials from
``trial_summaries`` (values and parameters) and the parameters' distributions from Optuna's ``trial_params``, and
runs Optuna's PED-ANOVA evaluator (fast, and it handles conditional parameters) on an in-memory study.
"""

from __future__ import annotations

import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import storage
from api.cache import JobKey
from api.schemas import Importance
from storage import queries as q

log = logging.getLogger("mtl_tune.api")

MIN_TRIALS = 5  # fewer complete trials say nothing about importance
EVALUATOR = "ped-anova"
# A recomputation holds the GIL for a while (about 0.5 s for 2,000 trials), so while a large study runs it is
# redone when the complete trials grew by a tenth or the result is older than this, not after every new trial.
REFRESH_SECONDS = 30.0


@dataclass
class _Entry:
    importances: dict[str, float] | None = None
    computed_at: datetime | None = None
    n_trials: int = 0  # trials the importances came from
    complete: int = 0  # complete trials the study had when the computation started
    running: bool = False
    note: str | None = None


@dataclass(frozen=True)
class Job:
    """What a computation needs, copied out of the request's session."""

    url: str
    key: JobKey
    job_id: int
    study_name: str
    direction: Literal["minimize", "maximize"]
    objective: str


@dataclass
class ImportanceCache:
    max_trials: int = 2000
    _entries: dict[JobKey, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtl-tune-importance")
    )

    def get(self, job: Job, *, complete: int) -> Importance:
        """The cached importances of ``job``; schedules a computation when ``complete`` grew past the cache's."""
        if complete < MIN_TRIALS:
            note = f"needs at least {MIN_TRIALS} complete trials, the study has {complete}"
            return Importance(status="unavailable", importances={}, computed_at=None, n_trials=0, stale=False,
                              evaluator=EVALUATOR, note=note)  # fmt: skip
        with self._lock:
            entry = self._entries.setdefault(job.key, _Entry())
            if _due(entry, complete):
                entry.running = True
                entry.complete = complete
                self._executor.submit(self._compute, job, entry)
            return _response(entry, stale=entry.running or entry.complete < complete)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _compute(self, job: Job, entry: _Entry) -> None:
        try:
            importances, used, note = compute(job, max_trials=self.max_trials)
        except Exception as exc:  # a broken study must not kill the thread; the response says what happened
            log.exception("importance of study %r failed", job.study_name)
            importances, used, note = None, 0, f"could not compute importances: {type(exc).__name__}: {exc}"
        with self._lock:
            if importances is not None or entry.importances is None:
                entry.importances, entry.n_trials = importances, used
                entry.computed_at = datetime.now(UTC)
            entry.note, entry.running = note, False


def _due(entry: _Entry, complete: int) -> bool:
    if entry.running or complete <= entry.complete:
        return False
    if entry.computed_at is None or complete >= 1.1 * entry.complete:
        return True
    return (datetime.now(UTC) - entry.computed_at).total_seconds() >= REFRESH_SECONDS


def _response(entry: _Entry, *, stale: bool) -> Importance:
    if entry.importances is not None:
        return Importance(status="ready", importances=entry.importances, computed_at=entry.computed_at,
                          n_trials=entry.n_trials, stale=stale, evaluator=EVALUATOR, note=entry.note)  # fmt: skip
    status = "computing" if entry.running else "unavailable"
    return Importance(status=status, importances={}, computed_at=None, n_trials=0, stale=False, evaluator=EVALUATOR,
                      note=entry.note)  # fmt: skip


def compute(job: Job, *, max_trials: int) -> tuple[dict[str, float] | None, int, str | None]:
    """Importances of the first objective over the ``max_trials`` most recent complete trials."""
    import optuna
    from optuna.distributions import json_to_distribution

    with storage.session_scope(job.url) as session:
        rows = q.recent_complete(session, job_id=job.job_id, limit=max_trials)
        study_id = q.optuna_study_id(session, study_name=job.study_name)
        dists = q.param_distributions(session, study_id=study_id) if study_id is not None else {}
    distributions = {name: json_to_distribution(text) for name, text in dists.items()}
    trials = [t for t in (_trial(values, params, distributions) for _, values, params in rows) if t is not None]
    if len(trials) < MIN_TRIALS or not distributions:
        return None, len(trials), f"needs at least {MIN_TRIALS} complete trials with recorded parameters"
    study = optuna.create_study(direction=job.direction)
    study.add_trials(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = optuna.importance.PedAnovaImportanceEvaluator().evaluate(study)
    importances, note = normalised(raw)
    if len(rows) == max_trials:
        note = "; ".join(filter(None, [note, f"computed from the {len(trials)} most recent complete trials"]))
    if job.objective == "pareto":
        note = "importance for the first objective" + (f"; {note}" if note else "")
    return importances, len(trials), note


def normalised(raw: dict[str, float]) -> tuple[dict[str, float], str | None]:
    """Importances summing to 1, the largest first. When none stands out (every one 0: the best trials' parameters
    spread as all trials' do, or too few trials to tell), none is drawn: Optuna would report them all equal, which
    reads as "all matter alike"."""
    total = sum(raw.values())
    if not total > 0:
        return {}, "no parameter stands out yet: the best trials' values spread as all trials' do"
    ranked = sorted(raw.items(), key=lambda item: item[1], reverse=True)
    return {name: float(value) / total for name, value in ranked}, None


def _trial(values: Any, params: dict[str, Any], distributions: dict[str, Any]) -> Any:
    import optuna

    if not isinstance(values, list) or not values or not isinstance(values[0], int | float):
        return None
    known = {k: v for k, v in (params or {}).items() if k in distributions}
    try:
        return optuna.trial.create_trial(
            params=known, distributions={k: distributions[k] for k in known}, value=float(values[0])
        )
    except (ValueError, TypeError):  # a value outside its distribution, or NaN: leave the trial out
        return None
