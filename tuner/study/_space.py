"""The search-space specification: which knobs a study searches, over what range, and which are fixed.

A space file (YAML or JSON) and the REST API's ``space`` field share this schema. A knob given as a plain value is
fixed; a ``{low, high}`` range is searched (log-uniform for learning rates and task weights); a list is a
categorical choice. Parameters exist only where they mean something: a strategy's own knobs only for that
strategy, task weights only for ``static``, ``lr_weighting`` only for strategies with learnable weights, ``chain``
only for problems with a chain. ``model`` holds the problem's own model knobs (an integer knob's range is searched
over integers); ``strategies`` the strategies' own knobs, by strategy (``{gradnorm: {alpha: {low: 0, high: 3}},
dwa: {temperature: 2}}``), over each knob's default range; a top-level ``alpha`` is GradNorm's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuner.problems import Knob, Problem
from tuner.weighting import STRATEGIES

CHAIN_MODES = ("none", "detach", "through")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = ("fp32", "bf16", "fp16")


class SpaceError(ValueError):
    """An invalid search space; the message names the field."""


class Range(BaseModel):
    """A searched float: uniform in [low, high], or log-uniform when ``log`` is true."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range must be positive, got low={self.low} (set log: false to include 0)")
        return self


FloatKnob = float | Range
#: A model knob: a fixed value, a range, or a list of choices.
ModelKnob = Range | bool | int | float | str | list[bool | int | float | str]


class SearchSpace(BaseModel):
    """What a study searches; omitted knobs take the problem's default space."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | list[str] = Field(default_factory=lambda: default_strategies())
    strategies: dict[str, dict[str, ModelKnob]] = Field(default_factory=dict)
    weights: FloatKnob | dict[str, FloatKnob] = Field(default_factory=lambda: Range(low=0.1, high=10.0))
    lr_shared: FloatKnob | None = None
    lr_heads: FloatKnob | None = None
    lr_head: dict[str, FloatKnob] | None = None
    lr_weighting: FloatKnob | None = None
    alpha: FloatKnob | None = Field(None, description="GradNorm's alpha: the same as strategies.gradnorm.alpha")
    chain: str | list[str] | None = None
    weight_decay: FloatKnob = 0.0
    batch_size: int | list[int] | None = None
    optimizer: str | list[str] = "adam"
    schedule: str | list[str] = "constant"
    warmup: FloatKnob = 0.0
    clip_grad: FloatKnob | None = None
    precision: str | list[str] = "fp32"
    model: dict[str, ModelKnob] | None = None

    @field_validator("weights", mode="before")
    @classmethod
    def _range_not_tasks(cls, value: object) -> object:
        # {low, high} is one range for every task, not weights for tasks named "low" and "high".
        if isinstance(value, dict) and value and set(value) <= {"low", "high", "log"}:
            return Range.model_validate(value)
        return value

    @field_validator("strategy")
    @classmethod
    def _known_strategies(cls, value: str | list[str]) -> str | list[str]:
        return _known(value, tuple(STRATEGIES), "strategy")

    @field_validator("strategies")
    @classmethod
    def _known_knobs(cls, value: dict[str, dict[str, ModelKnob]]) -> dict[str, dict[str, ModelKnob]]:
        for name, knobs in value.items():
            if name not in STRATEGIES:
                raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
            own = STRATEGIES[name].knobs
            for knob in knobs:
                if knob not in own:
                    raise ValueError(f"{name}.{knob}: {name!r} has no such knob; its knobs: {', '.join(own) or 'none'}")
        return value

    @model_validator(mode="after")
    def _alpha_is_gradnorms(self) -> SearchSpace:
        if self.alpha is not None:
            gradnorm = self.strategies.setdefault("gradnorm", {})
            gradnorm.setdefault("alpha", self.alpha)
            self.alpha = None
        return self

    @field_validator("chain")
    @classmethod
    def _known_chain(cls, value: str | list[str] | None) -> str | list[str] | None:
        return None if value is None else _known(value, CHAIN_MODES, "chain mode")

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str | list[str]) -> str | list[str]:
        return _known(value, OPTIMIZERS, "optimizer")

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str | list[str]) -> str | list[str]:
        return _known(value, SCHEDULES, "schedule")

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str | list[str]) -> str | list[str]:
        return _known(value, PRECISIONS, "precision")

    @model_validator(mode="after")
    def _trainable_values(self) -> SearchSpace:
        # Every value a trial can draw must be one training accepts (``TrainConfig``), or every trial would fail.
        knobs: list[tuple[str, FloatKnob | None]] = [
            (name, getattr(self, name)) for name in ("lr_shared", "lr_heads", "lr_weighting", "weight_decay", "warmup")
        ]
        knobs += [(f"lr_head.{task}", knob) for task, knob in (self.lr_head or {}).items()]
        for name, knob in knobs:
            _within(name, knob, low=0.0)
        _within("warmup", self.warmup, high=1.0)
        _within("clip_grad", self.clip_grad, low=0.0, open_low=True)
        weights = self.weights.items() if isinstance(self.weights, dict) else [(None, self.weights)]
        for task, knob in weights:
            _within("weights" if task is None else f"weights.{task}", knob, low=0.0, open_low=True)
        return self

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | list[int] | None) -> int | list[int] | None:
        for v in [value] if isinstance(value, int) else value or []:
            if v < 1:
                raise ValueError(f"batch size must be >= 1, got {v}")
        return value

    @property
    def strategy_names(self) -> list[str]:
        return [self.strategy] if isinstance(self.strategy, str) else list(self.strategy)


def _within(
    name: str, knob: FloatKnob | None, *, low: float | None = None, high: float | None = None, open_low: bool = False
) -> None:
    """A fixed value or a range inside ``[low, high)`` (``(low, high)`` with ``open_low``); the message names it."""
    if knob is None:
        return
    lowest, highest = (knob.low, knob.high) if isinstance(knob, Range) else (knob, knob)
    if low is not None and (lowest < low or (open_low and lowest == low)):
        raise ValueError(f"{name}: must be {'>' if open_low else '>='} {low:g}, got {lowest:g}")
    if high is not None and highest >= high:
        raise ValueError(f"{name}: must be below {high:g}, got {highest:g}")


def default_strategies() -> list[str]:
    """Every registered strategy, ``equal`` (the baseline's) first."""
    return ["equal", *(name for name in STRATEGIES if name != "equal")]


def strategy_knobs(name: str, given: dict[str, ModelKnob] | None = None) -> dict[str, ModelKnob]:
    """A strategy's knobs as searched: ``given`` over each knob's default range (or fixed default)."""
    return {knob: (given or {}).get(knob, _model_knob(k)) for knob, k in STRATEGIES[name].knobs.items()}


def _known(value: str | list[str], allowed: tuple[str, ...], what: str) -> str | list[str]:
    values = [value] if isinstance(value, str) else value
    if not values:
        raise ValueError(f"at least one {what} is required")
    for v in values:
        if v not in allowed:
            raise ValueError(f"unknown {what} {v!r}; expected one of {', '.join(allowed)}")
    return value


def default_space(problem: Problem) -> SearchSpace:
    """Learning rates a decade either side of the problem's defaults; chaining searched where the problem has one;
    the model knobs the problem declares searched over their ranges (the others fixed at their defaults)."""
    d = problem.defaults
    model = {name: _model_knob(knob) for name, knob in problem.model_knobs.items()}
    strategies = default_strategies()
    return SearchSpace(
        strategy=strategies,
        strategies={name: strategy_knobs(name) for name in strategies if STRATEGIES[name].knobs},
        lr_shared=Range(low=d.lr_shared / 10, high=d.lr_shared * 10),
        lr_heads=Range(low=d.lr_heads / 10, high=d.lr_heads * 10),
        lr_weighting=Range(low=d.lr_weighting / 10, high=d.lr_weighting * 10),
        chain=list(CHAIN_MODES) if problem.chains else None,
        batch_size=d.batch_size,
        model=model or None,
    )


def _model_knob(knob: Knob) -> ModelKnob:
    if knob.choices is not None:
        return list(knob.choices)
    if knob.low is not None and knob.high is not None:
        return Range(low=knob.low, high=knob.high, log=knob.log)
    return knob.default


def resolve_space(problem: Problem, space: SearchSpace | dict[str, Any] | None) -> SearchSpace:
    """The user's knobs over the problem's default space; checks task names against the problem."""
    base = default_space(problem)
    if space is None:
        return base
    given = space if isinstance(space, SearchSpace) else parse_space(space)
    merged = base.model_copy(update={k: getattr(given, k) for k in given.model_fields_set - {"alpha", "strategies"}})
    named = {*base.strategies, *given.strategies}  # knobs not named keep their strategy's default range
    merged.strategies = {name: strategy_knobs(name, given.strategies.get(name)) for name in named}
    if given.model is not None:  # knobs not named keep the problem's default space
        merged.model = {**(base.model or {}), **given.model}
        unknown = sorted(set(given.model) - set(problem.model_knobs))
        if unknown:
            known = ", ".join(problem.model_knobs) or "none"
            raise SpaceError(f"model.{unknown[0]}: unknown model knob of problem {problem.name!r}; knobs: {known}")
    names = problem.task_names
    for field, mapping in (("weights", merged.weights), ("lr_head", merged.lr_head)):
        if isinstance(mapping, dict):
            unknown = sorted(set(mapping) - set(names))
            if unknown:
                raise SpaceError(f"{field}.{unknown[0]}: unknown task; tasks of {problem.name!r}: {names}")
    if merged.chain is not None and not problem.chains and "chain" in given.model_fields_set:
        raise SpaceError(f"chain: problem {problem.name!r} has no task chain to search")
    return merged


def parse_space(data: dict[str, Any]) -> SearchSpace:
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise SpaceError(f"space: {_explain(exc)}") from None


def _explain(exc: ValidationError) -> str:
    """The most telling error: for a union knob (a value or a range), the member the input looked like."""
    errors = exc.errors()
    mismatch = ("_type", "_parsing", "union_tag_invalid")
    telling = [e for e in errors if not e["type"].endswith(mismatch)] or errors
    err = telling[0]
    members = ("Range", "float", "int", "str", "list[str]", "list[int]", "dict[str,union[float,Range]]")
    where = ".".join(str(p) for p in err["loc"] if str(p) not in members and not str(p).startswith("function-"))
    message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message  # the space's own checks name their knob


def load_space(path: Path) -> SearchSpace:
    """Read a YAML or JSON space file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpaceError(f"space file {str(path)!r}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpaceError(
            f"space file {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise SpaceError(f"space file {path}: expected a mapping of knobs")
    return parse_space(data)
