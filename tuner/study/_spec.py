"""What a user asks for when launching a study (CLI flags or the REST body): validated once, here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuner.limits import Limits
from tuner.study._samplers import Objective, PrunerName, SamplerName

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


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
    pruner: PrunerName | None = Field(None, description="default: hyperband (scalar), none (pareto)")
    epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        strict=True,
        description="epochs per trial (the problem's default); at most MTL_TUNE_MAX_EPOCHS "
        f"(default {Limits().epochs})",
    )
    seed: int = Field(0, strict=True)

    @property
    def effective_pruner(self) -> str:
        if self.objective == "pareto":
            return "none"
        return self.pruner or "hyperband"
