"""Recording a study: the Optuna study (with its baseline trial enqueued) and its job row, or resuming one."""

from __future__ import annotations

import secrets
from contextlib import suppress
from dataclasses import dataclass

import optuna

import storage
from tuner.problems import Direction, Problem, create_problem
from tuner.study._space import SearchSpace, resolve_space
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


def validate(spec: StudySpec) -> tuple[Problem, SearchSpace, int]:
    """Everything that can be refused before anything is written."""
    problem = create_problem(spec.problem, spec.problem_options)
    space = resolve_space(problem, spec.space)
    return problem, space, spec.epochs or problem.defaults.epochs


def create_study(url: str, spec: StudySpec, *, source: str) -> Launched:
    """Create the study and its job; raises ``storage.StudyExists`` when the name is taken.

    The Optuna study, with its attributes and its baseline, comes first and the job row last: workers look for
    jobs, so they never meet one whose study is not ready. A launch that fails half-way deletes its study again.
    """
    problem, space, epochs = validate(spec)
    name = spec.name or f"{spec.problem}-{secrets.token_hex(3)}"
    storage.ensure_schema(url)
    dirs = directions(problem, spec.objective)
    rdb = storage.optuna_storage(url)
    try:
        study = optuna.create_study(study_name=name, storage=rdb, directions=dirs)
    except optuna.exceptions.DuplicatedStudyError:
        raise storage.StudyExists(f"study {name!r} already exists") from None
    try:
        for key, value in (
            ("problem", spec.problem),
            ("problem_options", spec.problem_options),
            ("objective", spec.objective),
            ("epochs", epochs),
            ("metric_names", {t.name: t.metric_name for t in problem.tasks}),
            ("tasks", task_infos(problem)),
        ):
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
            )
    except BaseException:
        with suppress(Exception):  # the error being raised says what went wrong; an orphan study blocks only its name
            optuna.delete_study(study_name=name, storage=rdb)
        raise
    return Launched(name, True, spec.n_trials)


def create_or_resume(url: str, spec: StudySpec, *, source: str) -> Launched:
    """The CLI's ``study run``: a new study, or more trials for an existing one of the same problem."""
    if spec.name is None:
        return create_study(url, spec, source=source)
    storage.ensure_schema(url)
    with storage.session_scope(url) as session:
        job = storage.find_job(session, spec.name)
        if job is not None:
            if job.problem != spec.problem:
                raise ValueError(
                    f"study {spec.name!r} exists for problem {job.problem!r}, not {spec.problem!r}; "
                    "choose another --study name"
                )
            job.n_trials = max(job.n_trials, spec.n_trials)
            counts = storage.claim_counts(session, spec.name)
            if counts.get("complete", 0) + counts.get("pruned", 0) < job.n_trials and job.status != "running":
                job.status = "queued"
            return Launched(spec.name, False, job.n_trials)
    return create_study(url, spec, source=source)
