"""Recording a study: the Optuna study (with its baseline trial enqueued) and its job row, or resuming one."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import optuna

import storage
from tuner.limits import Limits
from tuner.problems import Direction, Problem, create_problem
from tuner.study._checks import check_limits, check_task_names
from tuner.study._space import SearchSpace, SpaceError, resolve_space
from tuner.study._spec import StudySpec
from tuner.study._suggest import BASELINE_ATTR


@dataclass
class Launched:
    study_name: str
    created: bool
    n_trials: int


def task_infos(problem: Problem) -> list[dict[str, str]]:
    """Each task as the API, the CLI and the dashboard show it: the metric's direction is the task's own."""
    return [
        {"name": t.name, "kind": t.kind, "metric": t.metric_name, "direction": t.metric_def.direction}
        for t in problem.tasks
    ]


def directions(problem: Problem, objective: str) -> list[Direction]:
    """Scalar studies minimise one normalised loss; pareto studies follow each task's metric."""
    if objective == "pareto":
        return [t.metric_def.direction for t in problem.tasks]
    return ["minimize"]


def validate(spec: StudySpec, limits: Limits | None = None) -> tuple[Problem, SearchSpace, int]:
    """Everything that can be refused before anything is written: the problem, its options and data (a csv file is
    read here), its task names, the space, and the operator's limits (``tuner.limits``)."""
    problem = create_problem(spec.problem, spec.problem_options)
    check_task_names(problem)
    space = resolve_space(problem, spec.space)
    if spec.objective == "compare" and len(space.strategy_names) < 2:
        raise SpaceError("strategy: objective compare shares the trials between strategies and needs at least two")
    epochs = spec.epochs or problem.defaults.epochs
    check_limits(spec, problem, space, epochs, limits or Limits.from_env())
    return problem, space, epochs


def create_study(url: str, spec: StudySpec, *, source: str) -> Launched:
    """Create the study and its job; raises ``storage.StudyExists`` when the name is taken.

    The request is validated in full before anything is written, so a refused launch leaves nothing behind. The
    Optuna study, with its attributes and its baseline, comes first and the job row last: workers look for jobs, so
    they never meet one whose study is not ready. A launch that fails half-way deletes its study again.
    """
    problem, space, epochs = validate(spec)
    name = spec.name or f"{spec.problem}-{secrets.token_hex(3)}"
    dirs = directions(problem, spec.objective)
    attrs = {
        "problem": spec.problem,
        "problem_options": spec.problem_options,
        "objective": spec.objective,
        "epochs": epochs,
        "metric_names": {t.name: t.metric_name for t in problem.tasks},
        "tasks": task_infos(problem),
    }
    storage.ensure_schema(url)
    rdb = storage.optuna_storage(url)
    try:
        study = optuna.create_study(study_name=name, storage=rdb, directions=dirs)
    except optuna.exceptions.DuplicatedStudyError:
        raise storage.StudyExists(f"study {name!r} already exists") from None
    try:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        study.enqueue_trial({}, user_attrs={BASELINE_ATTR: True})
        with storage.session_scope(url) as session:
            storage.create_job(
                session,
                study_name=name,
                problem=spec.problem,
                problem_options=spec.problem_options,
                space=space.model_dump(mode="json"),
                objective=spec.objective,
                directions=dirs,
                sampler=spec.sampler,
                pruner=spec.effective_pruner,
                epochs=epochs,
                n_trials=spec.n_trials,
                seed=spec.seed,
                source=source,
                confirm_seeds=spec.confirm_seeds,
            )
    except BaseException:
        _undo(name, rdb)
        raise
    return Launched(name, True, spec.n_trials)


def _undo(name: str, rdb: optuna.storages.BaseStorage) -> None:
    """Delete the Optuna study of a launch that failed half-way. The error being raised says what went wrong; a
    connection that dropped (the likely cause) fails the first attempt and is replaced for the second."""
    for _ in range(2):
        try:
            optuna.delete_study(study_name=name, storage=rdb)
            return
        except KeyError:  # never created, or already deleted
            return
        except Exception:  # tried once more, then left: an orphan study blocks only its name
            continue


def create_or_resume(url: str, spec: StudySpec, *, source: str, resume: bool = False) -> Launched:
    """The CLI's ``study run``: a new study, or more trials for an existing one.

    An existing study continues only with the settings it was created with: a request that differs is refused,
    naming each difference, unless ``resume`` (continue as stored, whatever the request says besides its target).
    """
    if spec.name is None:
        if resume:
            raise ValueError("--resume needs the --study name of the study to continue")
        return create_study(url, spec, source=source)
    storage.ensure_schema(url)
    with storage.session_scope(url) as session:
        job = storage.find_job(session, spec.name)
        stored = None if job is None else stored_settings(job)
    if stored is None:
        if resume:
            raise ValueError(f"--resume: there is no study {spec.name!r} to resume")
        return create_study(url, spec, source=source)
    if resume:  # the stored settings were checked when the study was created; its new target is checked here
        Limits.from_env().check(("n_trials",), "trials", spec.n_trials)
    else:
        changed = differences(stored, requested_settings(spec, stored))
        if changed:
            raise ValueError(
                f"study {spec.name!r} exists with other settings: {'; '.join(changed)}. "
                "Run with --resume to continue it as it was created, or choose another --study name"
            )
    with storage.session_scope(url) as session:
        job = storage.get_job(session, spec.name)
        job.n_trials = max(job.n_trials, spec.n_trials)
        job.confirm_seeds = spec.confirm_seeds
        counts = storage.claim_counts(session, spec.name)
        if counts.get("complete", 0) + counts.get("pruned", 0) < job.n_trials and job.status != "running":
            job.status = "queued"
            job.last_error = None
        return Launched(spec.name, False, job.n_trials)


def stored_settings(job: storage.StudyJob) -> dict[str, Any]:
    """What a study was created with, as ``requested_settings`` spells a request (its target aside)."""
    return _plain(
        {
            "problem": job.problem,
            "problem_options": job.problem_options or {},
            "objective": job.objective,
            "sampler": job.sampler,
            "pruner": job.pruner,
            "epochs": job.epochs,
            "seed": job.seed,
            "space": job.space,
        }
    )


def requested_settings(spec: StudySpec, stored: dict[str, Any]) -> dict[str, Any]:
    """The settings ``spec`` would create a study with; the problem alone when it is another problem."""
    if spec.problem != stored["problem"]:
        return {"problem": spec.problem}
    _, space, epochs = validate(spec)
    return _plain(
        {
            "problem": spec.problem,
            "problem_options": spec.problem_options,
            "objective": spec.objective,
            "sampler": spec.sampler,
            "pruner": spec.effective_pruner,
            "epochs": epochs,
            "seed": spec.seed,
            "space": space.model_dump(mode="json"),
        }
    )


def differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``setting: stored value (requested: value)`` for each differing setting; options and the space by key."""
    out: list[str] = []
    for key, new in requested.items():
        old = stored.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for sub in sorted({*old, *new}):
                if old.get(sub) != new.get(sub):
                    out.append(f"{key}.{sub}: {_short(old.get(sub))} (requested: {_short(new.get(sub))})")
        else:
            out.append(f"{key}: {_short(old)} (requested: {_short(new)})")
    return out


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """JSON's view of the settings, as the job row stores them."""
    result: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return result


def _short(value: Any) -> str:
    text = "not set" if value is None else json.dumps(value) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
