"""One trial: its summary row (or, while it runs, Optuna's record of it), configuration and per-epoch curves."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

import storage
from api import views
from api.errors import NotFound
from api.schemas import TrialDetail, TrialRow
from storage import StudyJob
from storage import queries as q

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from tuner.problems import Problem

log = logging.getLogger("mtl_tune.api")

_STATES = {"RUNNING": "running", "WAITING": "waiting", "COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def trial_detail(url: str, session: Session, job: StudyJob, number: int, *, after_epoch: int | None) -> TrialDetail:
    """Raises ``NotFound`` when the study has no such trial."""
    summary = q.summary(session, job_id=job.id, number=number)
    frozen = optuna_trial(url, session, job, number)
    if summary is not None:
        row = views.trial_row(summary, baseline_number=views.baseline_of(session, job))
    elif frozen is not None:
        row = frozen_row(frozen)
    else:
        raise NotFound(f"study {job.study_name!r} has no trial {number}")
    attrs = frozen.user_attrs if frozen is not None else {}
    epochs = views.epoch_rows(q.trial_curves(session, job_id=job.id, trial_number=number, after_epoch=after_epoch))
    return TrialDetail(
        **row.model_dump(),
        config=as_trained(job, attrs.get("config") or {}),
        fail_reason=attrs.get("fail_reason"),
        epochs=epochs,
    )


def optuna_trial(url: str, session: Session, job: StudyJob, number: int) -> FrozenTrial | None:
    """One trial read through Optuna's storage (a handful of indexed queries), or None."""
    study_id = views.study_id(session, job)
    trial_id = q.optuna_trial_id(session, study_id=study_id, number=number) if study_id is not None else None
    return None if trial_id is None else storage.optuna_storage(url).get_trial(trial_id)


def frozen_row(trial: FrozenTrial) -> TrialRow:
    values = trial.values
    return TrialRow(
        number=trial.number, state=_STATES.get(trial.state.name, trial.state.name.lower()),
        values=views.values_of(values), objective=views.finite(values[0]) if values else None,
        params=trial.params, tasks=views.task_metrics(trial.user_attrs.get("tasks")),
        duration_s=trial.duration.total_seconds() if trial.duration else None,
        started_at=views.as_utc(trial.datetime_start), finished_at=views.as_utc(trial.datetime_complete),
        baseline=bool(trial.user_attrs.get(views.BASELINE_ATTR)),
    )  # fmt: skip


def as_trained(job: StudyJob, config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as training resolved it: where the recorded one leaves a value to the problem (``None``: the
    baseline's learning rates and batch size, a model knob not searched), the problem's default that training used.

    Resolved by training's own rule (``tuner.train.resolve_config``; imports torch on first use, as the problem
    list does). A configuration it cannot resolve (a plugin gone, options no longer valid) is shown as recorded.
    """
    if not config:
        return config
    from tuner.config import TrainConfig
    from tuner.train import resolve_config

    try:
        problem = _problem(job.problem, json.dumps(job.problem_options or {}, sort_keys=True))
        return resolve_config(problem, TrainConfig.model_validate(config)).model_dump(mode="json")
    except Exception:
        log.warning("trial config of study %r shown as recorded: it does not resolve", job.study_name, exc_info=True)
        return config


@lru_cache(maxsize=32)
def _problem(name: str, options: str) -> Problem:
    from tuner.problems import create_problem

    return create_problem(name, json.loads(options))
