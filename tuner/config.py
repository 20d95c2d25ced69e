"""One training configuration: what a trial evaluates and what ``mtl-tune train --config`` reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from torch import Tensor


class ConfigError(ValueError):
    """A training configuration that does not fit its problem; the message names the field."""


ChainMode = Literal["none", "detach", "through"]
OptimizerName = Literal["adam", "adamw", "sgd"]
Schedule = Literal["constant", "cosine", "linear"]
Precision = Literal["fp32", "bf16", "fp16"]


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

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def feed(self, feature: Tensor) -> Tensor:
        """What the target reads of the source's ``feature``: detached for ``detach``, as it is for ``through``."""
        if self.mode == "none":
            raise ValueError("chain mode 'none' feeds nothing: build the model without the chain")
        return feature.detach() if self.mode == "detach" else feature

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
    strategy_options: dict[str, Any] = Field(
        default_factory=dict, description="the strategy's own knobs (GradNorm's alpha, DWA's temperature, ...)"
    )
    weights: dict[str, float] | None = Field(None, description="per-task weights of the static strategy")
    lr_shared: float | None = Field(None, ge=0.0)
    lr_heads: float | None = Field(None, ge=0.0, description="one learning rate for every head")
    lr_head: dict[str, float] = Field(default_factory=dict, description="per-task head learning rates")
    lr_weighting: float | None = Field(None, ge=0.0)
    optimizer: OptimizerName = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int | None = Field(None, ge=1, description="batch size of in-memory data (a data loader has its own)")
    epochs: int | None = Field(None, ge=1)
    model: dict[str, Any] = Field(default_factory=dict, description="the model's own knobs (width, dropout, ...)")
    chain: Chain | None = None
    seed: int = 0
    schedule: Schedule = Field("constant", description="learning-rate schedule after warm-up: constant, cosine, linear")
    warmup: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of the steps with a linear warm-up")
    clip_grad: float | None = Field(None, gt=0.0, description="clip the gradients' global norm to this value")
    precision: Precision = Field("fp32", description="bf16 or fp16 autocast on CUDA (fp16 with a grad scaler)")

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, data: Any) -> Any:
        # Configurations written before the model's knobs, the precision and the strategies' own knobs had their
        # own fields: a top-level ``alpha`` is GradNorm's.
        if isinstance(data, dict) and ({"hidden", "depth", "bf16", "alpha"} & set(data)):
            data = dict(data)
            alpha = data.pop("alpha", None)
            if alpha is not None and data.get("strategy") == "gradnorm":
                data["strategy_options"] = {**(data.get("strategy_options") or {}), "alpha": alpha}
            model = dict(data.get("model") or {})
            for knob in ("hidden", "depth"):
                value = data.pop(knob, None)
                if value is not None:
                    model.setdefault(knob, value)
            data["model"] = model
            if data.pop("bf16", False):
                data.setdefault("precision", "bf16")
        return data

    @model_validator(mode="after")
    def _positive_weights(self) -> TrainConfig:
        for name, value in {**(self.weights or {}), **self.lr_head}.items():
            if value < 0:
                raise ValueError(f"task {name!r}: weights and learning rates must be >= 0, got {value}")
        return self
