"""A trained model on disk with what rebuilds it: the problem, its options and the training configuration."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.config import TrainConfig
from tuner.problems import Problem, create_problem
from tuner.train import TrainResult

FORMAT = 1


def save_model(result: TrainResult, path: Path, *, problem_options: Mapping[str, Any]) -> None:
    """Write the trained weights (a ``state_dict``) with the problem, its options, the configuration and the final
    per-task numbers. ``load_model`` rebuilds the model from it; ``torch.load(path, weights_only=True)`` reads it."""
    assert result.model is not None, "the result carries no trained model"
    final = result.final.tasks
    torch.save(
        {
            "format": FORMAT,
            "problem": result.problem,
            "problem_options": {k: str(v) if isinstance(v, Path) else v for k, v in problem_options.items()},
            "config": result.config.model_dump(mode="json"),
            "state_dict": result.model.state_dict(),
            "validation": {name: {"loss": t.val_loss, "metric": t.metric} for name, t in final.items()},
            "test": result.test,
        },
        path,
    )


def load_model(path: Path, *, device: str | torch.device = "cpu") -> tuple[Problem, nn.Module, TrainConfig]:
    """The problem, the model with its trained weights (in eval mode) and the configuration that trained it."""
    saved = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"{path}: not a model saved by mtl-tune (format {FORMAT})")
    problem = create_problem(saved["problem"], saved["problem_options"])
    config = TrainConfig.model_validate(saved["config"])
    chain = config.chain if config.chain is not None and config.chain.active else None
    model = problem.build_model(dict(config.model), chain)
    model.load_state_dict(saved["state_dict"])
    return problem, model.to(device).eval(), config
