"""What goes through Optuna's own API on purpose: a trial's configuration document (``study best``), every trial
(``study export``) and a study's deletion. ``study show`` reads mtl-tune's indexed tables, as the API does.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import suppress
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from storage._engine import StudyNotFound, session_scope
from storage._optuna import optuna_storage
from storage._schema import ensure_schema
from storage.epochs import claim_state
from storage.jobs import delete_job, get_job
from storage.models import StudyJob
from storage.queries import BASELINE_ATTR, recorded_tasks


def _load(url: str, name: str) -> tuple[StudyJob, optuna.Study]:
    ensure_schema(url)
    with session_scope(url) as session:
        job = get_job(session, name)
        session.expunge(job)
    try:
        return job, optuna.load_study(study_name=name, storage=optuna_storage(url))
    except KeyError:  # Optuna's "Record does not exist": deleted with Optuna's own tools
        raise StudyNotFound(
            f"study {name!r} has no Optuna study any more (deleted with Optuna's own tools?); "
            f"`mtl-tune study delete {name}` removes the rest"
        ) from None


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial of a scalar study, or the Pareto set of a multi-objective one."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return study.best_trials if len(study.directions) > 1 else [study.best_trial]


def task_metrics(study: optuna.Study) -> dict[str, tuple[str, str]]:
    """Each task's metric name and direction, as its problem declared them at launch."""
    tasks = recorded_tasks(study.user_attrs.get("tasks"), study.user_attrs.get("metric_names"))
    return {t["name"]: (t["metric"], t["direction"]) for t in tasks}


def report_state(trial: FrozenTrial) -> str:
    """A trial's state as every report and the API name it: a finished trial's is its claim's (``failed``, and
    ``interrupted`` for one its worker marked so), a running or waiting one's is Optuna's."""
    return claim_state(trial) if trial.state.is_finished() else trial.state.name.lower()


def best_config(url: str, name: str, *, trial_number: int | None = None) -> dict[str, Any]:
    """A document ``mtl-tune train --config`` accepts: problem, its options and the trial's configuration."""
    job, study = _load(url, name)
    if trial_number is not None:
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not trials:
            raise ValueError(f"study {name!r} has no trial {trial_number}")
        trial = trials[0]
    else:
        bests = best_trials(study)
        if not bests:
            raise ValueError(f"study {name!r} has no completed trial yet")
        if len(bests) > 1:
            numbers = ", ".join(str(t.number) for t in bests)
            raise ValueError(
                f"study {name!r} is multi-objective; choose one of its Pareto set with --trial ({numbers})"
            )
        trial = bests[0]
    return {
        "study": name,
        "trial": trial.number,
        "problem": job.problem,
        "problem_options": job.problem_options,
        "config": trial.user_attrs.get("config", {}),
        "values": trial.values,
    }


def export_trials(url: str, name: str, fmt: str) -> str:
    _, study = _load(url, name)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": report_state(t),
                "values": t.values,
                "params": t.params,
                "tasks": t.user_attrs.get("tasks", {}),
                "baseline": bool(t.user_attrs.get(BASELINE_ATTR)),
                "duration_s": t.duration.total_seconds() if t.duration else None,
                "fail_reason": t.user_attrs.get("fail_reason"),
            }
        )
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    return _to_csv(rows)


def _to_csv(rows: list[dict[str, Any]]) -> str:
    flat = []
    for r in rows:
        item: dict[str, Any] = {k: r[k] for k in ("number", "state", "baseline", "duration_s", "fail_reason")}
        for i, v in enumerate(r["values"] or []):
            item[f"value_{i}"] = v
        item.update({f"param_{k}": v for k, v in r["params"].items()})
        for task, numbers in r["tasks"].items():
            item.update({f"{task}_{k}": v for k, v in numbers.items()})
        flat.append(item)
    columns: list[str] = []
    for item in flat:
        columns += [c for c in item if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def delete_study(url: str, name: str) -> None:
    """Optuna's study, then the job (its claims, metrics and summaries go by cascade); raises ``StudyNotFound``.

    A job whose Optuna study is already gone (deleted with Optuna's own tools) is still deleted.
    """
    ensure_schema(url)
    with session_scope(url) as session:
        get_job(session, name)
    with suppress(KeyError):
        optuna.delete_study(study_name=name, storage=optuna_storage(url))
    with session_scope(url) as session:
        delete_job(session, name)
