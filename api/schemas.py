"""The REST API's JSON: request bodies and response models (pydantic v2).

``StudyCreate`` mirrors ``tuner.study.StudySpec`` field for field (a test keeps them in step): the API must not
import ``tuner`` (and with it torch) just to describe its body.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.confirmations import DEFAULT_SEEDS, MAX_SEEDS, MAX_TOP
from tuner.limits import Limits  # no torch: the limits module imports nothing of tuner

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # tuner.study._spec.NAME_PATTERN
Objective = Literal["scalar", "pareto", "compare"]
SamplerName = Literal["tpe", "random", "cmaes", "gp", "nsga2", "qmc"]
PrunerName = Literal["hyperband", "median", "successive-halving", "dominated", "none"]
PRUNER_HELP = (  # tuner.study._spec.PRUNER_HELP; a scalar study asking for dominated is refused at launch (422)
    "default: hyperband (scalar), none (pareto, compare); dominated (pareto only): stop a trial whose per-task metrics "
    "at a rung are dominated by those of 3 finished trials"
)
TrialOrder = Literal["number", "-number", "objective", "-objective", "duration_s", "-duration_s"]
ParamValue = float | int | str | bool
INT32_MAX = 2**31 - 1  # integer columns are 32-bit on PostgreSQL


def _check_finite(value: Any, where: str) -> None:
    """JSON bodies may carry NaN or Infinity; neither is a valid option, range bound or parameter."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: numbers must be finite")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}.{i}")


# --- requests ------------------------------------------------------------------------------------------------------


class StudyCreate(BaseModel):
    """A study to launch; omitted fields take the problem's defaults."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"problem": "uncertainty-toy", "problem_options": {"n_train": 200, "n_val": 100}, "n_trials": 3,
                 "epochs": 2},
                {"name": "digits-pareto", "problem": "multi-digits", "objective": "pareto", "sampler": "nsga2",
                 "n_trials": 50, "space": {"strategy": ["equal", "uncertainty"], "lr_shared": {"low": 1e-4,
                 "high": 1e-2}}},
            ]
        },
    )  # fmt: skip

    name: str | None = Field(
        None, pattern=NAME_PATTERN, description="URL-safe, at most 64 characters; generated when absent"
    )
    problem: str = Field(min_length=1, max_length=128, description="a registered problem (GET /api/problems)")
    problem_options: dict[str, Any] = Field(
        default_factory=dict,
        description='e.g. {"tasks": 10}; for csv, "data" is a path inside the server\'s data directory',
    )
    n_trials: int = Field(
        20,
        ge=1,
        le=1_000_000,
        strict=True,
        description="finished (complete or pruned) trials to reach; at most MTL_TUNE_MAX_TRIALS "
        f"(default {Limits().trials})",
    )
    space: dict[str, Any] | None = Field(None, description="search space; the problem's default when absent")
    objective: Objective = "scalar"
    sampler: SamplerName = "tpe"
    pruner: PrunerName | None = Field(None, description=PRUNER_HELP)
    epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        strict=True,
        description="epochs per trial (the problem's default); at most MTL_TUNE_MAX_EPOCHS "
        f"(default {Limits().epochs})",
    )
    seed: int = Field(0, ge=0, le=INT32_MAX, strict=True)
    confirm_seeds: int = Field(
        DEFAULT_SEEDS,
        ge=0,
        le=MAX_SEEDS,
        strict=True,
        description="seeds of the confirmation runs queued when the target is reached: the baseline, the best "
        "configurations and each strategy's best are trained again and judged on the test split (0: none; 1 is "
        "refused, an interval needs two)",
    )

    @model_validator(mode="after")
    def _finite(self) -> StudyCreate:
        _check_finite(self.problem_options, "problem_options")
        _check_finite(self.space, "space")
        return self


class EnqueueRequest(BaseModel):
    """A configuration for the study to evaluate next (warm start): parameter name to value."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"params": {"strategy": "uncertainty", "lr_shared": 0.01}}]}
    )

    params: dict[str, ParamValue] = Field(min_length=1)

    @model_validator(mode="after")
    def _finite(self) -> EnqueueRequest:
        _check_finite(self.params, "params")
        return self


# --- responses -----------------------------------------------------------------------------------------------------


class Health(BaseModel):
    """``degraded`` when the storage is unreachable, its schema is not the head revision, or fewer local workers run
    than ``serve`` supervises (one is being restarted, or cannot start)."""

    status: Literal["ok", "degraded"]
    storage: bool
    schema_revision: str | None
    head_revision: str
    workers_alive: int
    local_workers_expected: int = Field(description="worker processes this server supervises (serve --workers)")
    local_workers_alive: int = Field(description="of those, how many run now")


Direction = Literal["minimize", "maximize"]


class TaskInfo(BaseModel):
    name: str
    kind: str
    metric: str
    direction: Direction = Field(description="the metric's direction, as the task declares it")


class KnobInfo(BaseModel):
    """One of a problem's model knobs: its default and, when it is searched by default, its range or choices."""

    default: ParamValue
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[ParamValue] | None = None
    help: str = ""


class ProblemInfo(BaseModel):
    name: str
    description: str
    tasks: list[TaskInfo] = Field(description="empty when the tasks are declared by the options (csv's targets)")
    tasks_declared_by_options: bool = Field(
        False, description="true when only the problem options (or the data they name) tell the tasks"
    )
    model_knobs: dict[str, KnobInfo] = Field(default_factory=dict, description="the model's own knobs")
    default_space: dict[str, Any] = Field(description="the search space a study gets by default (`model` included)")
    options: dict[str, Any] = Field(description="JSON schema of problem_options")


class BrokenProblem(BaseModel):
    """A plugin the server could not register or describe; every other problem works."""

    name: str
    source: str
    error: str


class StrategyInfo(BaseModel):
    """A loss-weighting strategy a study can search: its own knobs (parameters ``<name>.<knob>``)."""

    name: str
    description: str
    knobs: dict[str, KnobInfo]
    needs_grad_norms: bool = False


class ProblemList(BaseModel):
    problems: list[ProblemInfo]
    broken: list[BrokenProblem] = Field(default_factory=list)


class TrialCounts(BaseModel):
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    interrupted: int = Field(0, description="ended by a worker's interrupt or a stop request; not failed")


class StudySummary(BaseModel):
    name: str
    problem: str
    problem_options: dict[str, Any]
    objective: str
    directions: list[str]
    status: str
    sampler: str
    pruner: str
    epochs: int
    n_trials: int
    trials: TrialCounts
    best_value: float | None = Field(description="best first objective value of a complete trial; null for pareto")
    created_at: datetime
    updated_at: datetime
    last_error: str | None


class StudyList(BaseModel):
    studies: list[StudySummary]


class TaskMetrics(BaseModel):
    val_loss: float | None = None
    metric: float | None = None
    weight: float | None = None
    sigma: float | None = None
    series: dict[str, float | None] = Field(
        default_factory=dict, description="every other per-task series the strategy reported, by name"
    )


class TrialRow(BaseModel):
    number: int
    state: str
    values: list[float | None] | None
    objective: float | None
    params: dict[str, Any]
    tasks: dict[str, TaskMetrics]
    duration_s: float | None
    started_at: datetime | None
    finished_at: datetime | None
    baseline: bool


class Comparison(BaseModel):
    """The best trial against the baseline on the validation split that chose the best: optimistic. The verdict
    (``GET /api/studies/{name}/verdict``) judges them on held-out data."""

    metric: str
    direction: Direction | None = Field(None, description="the task's direction; null for a task it does not know")
    baseline: float | None
    best: float | None
    change: float | None = Field(description="(best - baseline) / |baseline|")
    better: bool | None = Field(None, description="whether best is better by the direction; null when equal or unknown")


class StudyDetail(StudySummary):
    space: dict[str, Any] | None
    tasks: list[TaskInfo]
    best: list[TrialRow] = Field(description="the best trial (scalar) or the Pareto set (pareto)")
    baseline: TrialRow | None
    comparison: dict[str, Comparison] = Field(
        description="per task, best vs baseline on validation (optimistic; the verdict is on held-out data)"
    )
    confirm_seeds: int = Field(description="seeds of the confirmation queued when the target is reached (0: none)")


class TrialPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TrialRow]


class HistoryItem(BaseModel):
    number: int
    state: str
    objective: float | None
    values: list[float | None] | None


class History(BaseModel):
    items: list[HistoryItem]


class EpochTaskMetrics(BaseModel):
    train_loss: float | None
    val_loss: float | None
    metric: float | None
    weight: float | None
    sigma: float | None = Field(description="series['sigma'], kept for older clients")
    grad_norm: float | None = Field(description="series['grad_norm'], kept for older clients")
    series: dict[str, float | None] = Field(
        default_factory=dict,
        description="every per-task series the strategy reported this epoch besides the weight, by name "
        "(sigma, grad_norm, grad_norm_target, or any a strategy defines); null where it was not finite",
    )


class EpochRow(BaseModel):
    epoch: int
    tasks: dict[str, EpochTaskMetrics]


class TrialDetail(TrialRow):
    config: dict[str, Any]
    fail_reason: str | None
    epochs: list[EpochRow]


class Importance(BaseModel):
    status: Literal["ready", "computing", "unavailable"]
    importances: dict[str, float]
    computed_at: datetime | None
    n_trials: int = Field(description="complete trials the importances were computed from")
    stale: bool = Field(description="more trials finished since; a recomputation is under way")
    evaluator: str = "ped-anova"
    note: str | None = Field(None, description="e.g. that only the most recent trials were used")


class Enqueued(BaseModel):
    study: str
    params: dict[str, ParamValue]
    status: str = Field(description="the study's status after enqueuing")


class ConfirmRequest(BaseModel):
    """Which configurations to train again, and with how many fresh seeds."""

    model_config = ConfigDict(extra="forbid")

    seeds: int | None = Field(
        None,
        ge=2,
        le=MAX_SEEDS,
        strict=True,
        description=f"seeds per configuration (2 to {MAX_SEEDS}: an interval needs two); default: the study's own "
        f"(of its last confirmation or its launch), else {DEFAULT_SEEDS}",
    )
    top: int = Field(1, ge=1, le=MAX_TOP, strict=True, description="how many of the best configurations to confirm")


class Interval(BaseModel):
    """The mean difference to the baseline over paired seeds, with its 95 % t interval (none below two pairs)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int


class ConfirmedTask(BaseModel):
    mean: float | None = Field(description="the task's metric on the held-out split, mean over seeds")
    std: float | None
    n: int
    diff: Interval
    judgement: Literal["better", "worse", "within noise", "too few seeds", "not run yet"]


class ConfirmedConfig(BaseModel):
    trial: int
    roles: list[str] = Field(description="why it is confirmed: baseline, best, top N, best <strategy>, static front, "
                                         "pareto")  # fmt: skip
    strategy: str | None
    config: dict[str, Any]
    seeds: list[int] = Field(description="the seeds whose runs completed")
    failed: list[dict[str, Any]]
    tasks: dict[str, ConfirmedTask]


class FrontPoint(BaseModel):
    trial: int
    x: float
    y: float
    front: bool = Field(description="no other static weighting dominates it on this pair of tasks")


class StrategyPoint(BaseModel):
    trial: int
    strategy: str | None
    roles: list[str]
    x: float
    y: float
    dominated: bool = Field(description="a tuned static weighting dominates it on this pair of tasks")


class TaskPair(BaseModel):
    tasks: list[str]
    static: list[FrontPoint]
    others: list[StrategyPoint]


class Scalarization(BaseModel):
    """Each strategy's confirmed best against the confirmed tuned static weightings."""

    static_trials: list[int]
    pairs: list[TaskPair]
    dominated: list[str] = Field(description="strategies a tuned static weighting dominates on every task")
    not_dominated: list[str]


class RunCounts(BaseModel):
    queued: int
    running: int
    complete: int
    failed: int


class Verdict(BaseModel):
    """Does tuning beat the default on held-out data, task by task, with intervals paired by seed."""

    study: str
    objective: str
    status: Literal["not requested", "pending", "running", "complete"]
    provisional: bool = Field(
        description="the study still searches: a better trial may come, and it confirms again at its target"
    )
    runs: RunCounts
    seeds: list[int]
    split: Literal["test", "validation"] | None = Field(
        description="where the runs are judged; validation (optimistic) for a problem without a test split"
    )
    optimistic: bool
    interval: str
    tasks: list[TaskInfo]
    candidates: list[ConfirmedConfig]
    judgements: dict[str, str] = Field(description="per task, the best configuration against the baseline")
    sentence: str
    scalarization: Scalarization | None
