"""One training configuration: what a trial evaluates and what ``mtl-tune train --config`` reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConfigError(ValueError):
    """A training configuration that does not fit its problem; the message names the field."""


ChainMode = Literal["none", "detach", "through"]
OptimizerName = Literal["adam", "adamw", "sgd"]


class Chain(BaseModel):
    """Feed ``source``'s prediction to ``target``'s head. ``detach`` stops the gradient: ``target``'s loss does not
    train ``source`` (neither its head nor, through that path, the trunk)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    mode: ChainMode = "detach"

    @model_validator(mode="after")
    def _distinct(self) -> Chain:
        if self.source == self.target:
            raise ValueError(f"chain: source and target are the same task {self.source!r}")
        return self

    @classmethod
    def parse(cls, spec: str) -> Chain:
        """``A:B:mode`` (mode defaults to detach)."""
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"chain {spec!r}: expected SOURCE:TARGET[:none|detach|through]")
        return cls.model_validate(dict(zip(("source", "target", "mode"), parts, strict=False)))


class TrainConfig(BaseModel):
    """Everything that decides one training run. ``None`` means "the problem's default"."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = "equal"
    weights: dict[str, float] | None = Field(None, description="per-task weights of the static strategy")
    alpha: float = Field(1.5, ge=0.0, description="GradNorm asymmetry")
    lr_shared: float | None = Field(None, ge=0.0)
    lr_heads: float | None = Field(None, ge=0.0, description="one learning rate for every head")
    lr_head: dict[str, float] = Field(default_factory=dict, description="per-task head learning rates")
    lr_weighting: float | None = Field(None, ge=0.0)
    optimizer: OptimizerName = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    hidden: int | None = Field(None, ge=1)
    depth: int | None = Field(None, ge=1)
    chain: Chain | None = None
    seed: int = 0
    bf16: bool = Field(False, description="bf16 autocast (CUDA only)")

    @model_validator(mode="after")
    def _positive_weights(self) -> TrainConfig:
        for name, value in {**(self.weights or {}), **self.lr_head}.items():
            if value < 0:
                raise ValueError(f"task {name!r}: weights and learning rates must be >= 0, got {value}")
        return self
