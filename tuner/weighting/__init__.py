"""Loss-weighting strategies, one per module, behind ``WeightingStrategy``; ``STRATEGIES`` maps names to classes."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.config import ConfigError, TrainConfig
from tuner.problems import Task
from tuner.weighting._aggregators import (
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    DualProj,
    GradDrop,
    NashMTL,
    PCGrad,
    RandomGrad,
    UPGrad,
)
from tuner.weighting._base import WeightingStrategy
from tuner.weighting._dwa import DWA
from tuner.weighting._famo import FAMO
from tuner.weighting._fixed import Equal, Static
from tuner.weighting._gls import GLS
from tuner.weighting._gradnorm import GradNorm
from tuner.weighting._imtl_l import IMTLL
from tuner.weighting._rlw import RLW
from tuner.weighting._uncertainty import Uncertainty, UncertaintyPositive

__all__ = [
    "DWA",
    "FAMO",
    "GLS",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "RLW",
    "STRATEGIES",
    "AlignedMTL",
    "CAGrad",
    "DualProj",
    "Equal",
    "GradDrop",
    "GradNorm",
    "NashMTL",
    "PCGrad",
    "RandomGrad",
    "Static",
    "UPGrad",
    "Uncertainty",
    "UncertaintyPositive",
    "WeightingStrategy",
    "build_strategy",
    "summary",
]

#: Every strategy by name: one module each, registered here (loss-based first, then gradient aggregators).
STRATEGIES: dict[str, type[WeightingStrategy]] = {
    cls.name: cls
    for cls in (
        # weighting of the losses
        Equal,
        Static,
        Uncertainty,
        UncertaintyPositive,
        GradNorm,
        DWA,
        FAMO,
        RLW,
        GLS,
        IMTLL,
        # aggregation of the tasks' gradients on the shared parameters
        UPGrad,
        PCGrad,
        CAGrad,
        NashMTL,
        IMTLG,
        AlignedMTL,
        MGDA,
        DualProj,
        GradDrop,
        RandomGrad,
    )
}


def summary(cls: type[WeightingStrategy]) -> str:
    """A strategy's one-line description: its own, else the first line of its module's docstring."""
    import sys

    doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    return cls.description or (doc.splitlines()[0].rstrip(".") if doc else cls.name)


def build_strategy(tasks: Sequence[Task], config: TrainConfig) -> WeightingStrategy:
    if config.strategy not in STRATEGIES:
        raise ConfigError(f"strategy: unknown {config.strategy!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[config.strategy].from_config(tasks, config)
