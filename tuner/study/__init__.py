"""The study layer: search spaces, launching studies, running trials in workers. The only place that touches
Optuna trials."""

from __future__ import annotations

from tuner.study._launch import Launched, create_or_resume, create_study, directions, task_infos, validate
from tuner.study._samplers import OBJECTIVES, PRUNERS, SAMPLERS, make_pruner, make_sampler
from tuner.study._space import (
    Range,
    SearchSpace,
    SpaceError,
    default_space,
    default_strategies,
    load_space,
    parse_space,
    resolve_space,
)
from tuner.study._spec import StudySpec
from tuner.study._suggest import BASELINE_ATTR, baseline_config, suggest_config
from tuner.study._trial import JobInfo, StopRequested, TrialRunner, task_table
from tuner.study._worker import Worker, WorkerSettings

__all__ = [
    "BASELINE_ATTR",
    "OBJECTIVES",
    "PRUNERS",
    "SAMPLERS",
    "JobInfo",
    "Launched",
    "Range",
    "SearchSpace",
    "SpaceError",
    "StopRequested",
    "StudySpec",
    "TrialRunner",
    "Worker",
    "WorkerSettings",
    "baseline_config",
    "create_or_resume",
    "create_study",
    "default_space",
    "default_strategies",
    "directions",
    "load_space",
    "make_pruner",
    "make_sampler",
    "parse_space",
    "resolve_space",
    "suggest_config",
    "task_infos",
    "task_table",
    "validate",
]
