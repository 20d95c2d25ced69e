"""Warm start: a user's configuration queued as the study's next trial (Optuna's ``enqueue_trial``).

Parameters are checked against the study's recorded search space first: a name the space does not search, a value
outside its range or not among its choices is a 422 naming the parameter. The names follow
``tuner.study.suggest_config``: the knobs themselves, ``weight_<task>``, ``lr_head_<task>``, ``model_<knob>`` and a
strategy's own knobs as ``<strategy>.<knob>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import update

import storage
from api.errors import invalid
from api.schemas import ParamValue
from storage import StudyJob

_FLOAT_KNOBS = ("lr_shared", "lr_heads", "lr_weighting", "weight_decay", "warmup", "clip_grad")
_CHOICE_KNOBS = ("strategy", "optimizer", "chain", "batch_size", "schedule", "precision")


def searched(space: Mapping[str, Any], tasks: list[str]) -> dict[str, Any]:
    """``{parameter: range dict or list of choices}`` for every parameter the space searches."""
    found: dict[str, Any] = {}
    for knob in _CHOICE_KNOBS:
        value = space.get(knob)
        if isinstance(value, list) and len(value) > 1:
            found[knob] = value
    for knob in _FLOAT_KNOBS:
        if _is_range(space.get(knob)):
            found[knob] = space[knob]
    found.update(_per_task("weight", space.get("weights"), tasks))
    found.update(_per_task("lr_head", space.get("lr_head"), tasks))
    for knob, value in (space.get("model") or {}).items():  # the problem's model knobs: ``model_<name>``
        if _searched(value):
            found[f"model_{knob}"] = value
    for strategy, knobs in (space.get("strategies") or {}).items():  # conditional on the strategy
        found.update({f"{strategy}.{knob}": value for knob, value in knobs.items() if _searched(value)})
    if space.get("lr_head"):
        found.pop("lr_heads", None)  # per-head rates replace the shared head rate
    return found


def check(params: Mapping[str, ParamValue], space: Mapping[str, Any], tasks: list[str]) -> None:
    known = searched(space, tasks)
    for name, value in params.items():
        where = ["params", name]
        if name not in known:
            raise invalid(where, f"not searched by this study; searched parameters: {', '.join(sorted(known))}")
        domain = known[name]
        if isinstance(domain, list):
            if value not in domain or isinstance(value, bool):
                raise invalid(where, f"{value!r} is not one of {domain}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(where, "a number is required")
        elif not domain["low"] <= value <= domain["high"]:
            raise invalid(where, f"{value} is outside [{domain['low']}, {domain['high']}]")


def enqueue(url: str, study_name: str, params: Mapping[str, ParamValue]) -> str:
    """Queue the trial; a completed study gets one more trial to run. Returns the study's status."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage.optuna_storage(url))
    except KeyError:  # deleted with Optuna's own tools: the job is what is left
        raise storage.StudyNotFound(
            f"study {study_name!r} has no Optuna study any more; `mtl-tune study delete {study_name}` removes the rest"
        ) from None
    study.enqueue_trial(dict(params))
    reopen = (
        update(StudyJob)
        .where(StudyJob.study_name == study_name, StudyJob.status == "completed")
        .values(n_trials=StudyJob.n_trials + 1, status="queued")
    )
    with storage.session_scope(url) as session:
        session.execute(reopen)  # one statement: no read-then-write race with workers finishing trials
        return storage.get_job(session, study_name).status


def _searched(value: Any) -> bool:
    return _is_range(value) or (isinstance(value, list) and len(value) > 1)


def _is_range(value: Any) -> bool:
    return isinstance(value, dict) and {"low", "high"} <= set(value) and value["low"] < value["high"]


def _per_task(prefix: str, value: Any, tasks: list[str]) -> dict[str, Any]:
    if _is_range(value):
        return {f"{prefix}_{t}": value for t in tasks}
    if isinstance(value, dict):
        return {f"{prefix}_{t}": knob for t, knob in value.items() if _is_range(knob)}
    return {}
