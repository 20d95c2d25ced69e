"""What a user asks for when launching a study (CLI flags or the REST body): validated once, here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from storage.confirmations import DEFAULT_SEEDS, MAX_SEEDS
from tuner.limits import Limits
from tuner.study._samplers import PARETO_PRUNERS, Objective, PrunerName, SamplerName

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PRUNER_HELP = (
    "default: hyperband (scalar), none (pareto, compare); dominated (pareto only): stop a trial whose per-task metrics "
    "at a rung are dominated by those of 3 finished trials"
)


class StudySpec(BaseModel):
    """A study request. ``name`` is URL-safe (letters, digits, ``.``, ``_``, ``-``; at most 64 characters)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=NAME_PATTERN, description="study name; generated when absent")
    problem: str = Field(description="a registered problem name")
    problem_options: dict[str, Any] = Field(default_factory=dict, description='e.g. {"tasks": 10}')
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
    seed: int = Field(0, strict=True)
    confirm_seeds: int = Field(
        DEFAULT_SEEDS,
        ge=0,
        le=MAX_SEEDS,
        strict=True,
        description="seeds of the confirmation runs queued when the target is reached (0: none, 1 is refused: "
        "an interval needs two)",
    )

    @model_validator(mode="after")
    def _two_seeds_or_none(self) -> StudySpec:
        if self.confirm_seeds == 1:
            raise ValueError("confirm_seeds: 0 (no confirmation) or at least 2 (an interval needs two seeds)")
        return self

    @field_validator("pruner")
    @classmethod
    def _pruner_fits_objective(cls, pruner: str | None, info: ValidationInfo) -> str | None:
        if pruner == "dominated" and info.data.get("objective", "scalar") != "pareto":
            raise ValueError(
                "the dominated pruner compares per-task metric vectors and is for pareto studies only; scalar "
                "studies take hyperband, median, successive-halving or none"
            )
        return pruner

    @property
    def effective_pruner(self) -> str:
        """The pruner the study runs with: pareto studies take ``dominated`` or none (Optuna's pruners cannot
        prune multi-objective studies, so any other is ignored); compare studies none unless asked (one pruner
        judging every strategy's trials together stops most trials of the strategies that start slower, which
        undoes the even budget compare gives them); scalar studies hyperband."""
        if self.objective == "pareto":
            return self.pruner if self.pruner in PARETO_PRUNERS else "none"
        return self.pruner or ("none" if self.objective == "compare" else "hyperband")
