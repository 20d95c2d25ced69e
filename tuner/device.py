"""Which device a run uses: CUDA when present, then Apple's MPS, else the CPU; a name overrides."""

from __future__ import annotations

import torch

from tuner.config import ConfigError


def resolve_device(name: str | None = None) -> torch.device:
    if name:
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError(f"device: {exc}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} requested but CUDA is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
