"""``mtl-tune train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mtl_tune_cli._common import console, err_console, fail, parse_assignments, user_errors, validation_message
from mtl_tune_cli.study_cmd import parse_options

if TYPE_CHECKING:
    from tuner.problems import Task
    from tuner.train import TrainResult


def train(
    problem: Annotated[str | None, typer.Option(help="Problem name (see `mtl-tune problems`).")] = None,
    tasks: Annotated[int | None, typer.Option(help="Number of tasks (gradnorm-toy: 2 or up to 10).")] = None,
    data: Annotated[Path | None, typer.Option(help="CSV file for the csv problem.")] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="csv target COLUMN:regression|classification|binary[:METRIC] (repeatable).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="equal, static, uncertainty, uncertainty-positive, gradnorm or dwa.")
    ] = None,
    weights: Annotated[list[str] | None, typer.Option(help="Static task weights, e.g. a=1,b=2.")] = None,
    lr_shared: Annotated[float | None, typer.Option(help="Learning rate of the shared trunk.")] = None,
    lr_heads: Annotated[float | None, typer.Option(help="One learning rate for every task head.")] = None,
    lr_head: Annotated[list[str] | None, typer.Option(help="Per-task head learning rate TASK=X (repeatable).")] = None,
    lr_weighting: Annotated[float | None, typer.Option(help="Learning rate of the learnable loss weights.")] = None,
    alpha: Annotated[float | None, typer.Option(help="GradNorm asymmetry alpha (--strategy-option alpha=X).")] = None,
    strategy_option: Annotated[
        list[str] | None,
        typer.Option(help="A knob of the strategy KEY=VALUE, e.g. temperature=3 for dwa (repeatable)."),
    ] = None,
    chain: Annotated[str | None, typer.Option(help="Task chaining SOURCE:TARGET:none|detach|through.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam, adamw or sgd.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the initialisation and the batch order.")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            help="A problem option KEY=VALUE, e.g. n_train=500 (repeatable; `mtl-tune problems --options PROBLEM` "
            "lists them)."
        ),
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="A model knob KEY=VALUE, e.g. hidden=128 (repeatable).")
    ] = None,
    schedule: Annotated[str | None, typer.Option(help="Learning-rate schedule: constant, cosine or linear.")] = None,
    warmup: Annotated[float | None, typer.Option(help="Fraction of the steps with a linear warm-up.")] = None,
    clip_grad: Annotated[float | None, typer.Option(help="Clip the gradients' global norm to this value.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, or bf16 / fp16 autocast on CUDA.")] = None,
    save: Annotated[
        Path | None, typer.Option(help="Write the trained weights with the problem and configuration to this file.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps; default: the best available.")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON configuration, e.g. from `mtl-tune study best`.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Train one configuration and print per-task validation results and the final loss weights."""
    from tuner.config import TrainConfig
    from tuner.problems import create_problem
    from tuner.train import NonFiniteLossError
    from tuner.train import train as run_training

    with user_errors():
        base: dict[str, Any] = {}
        if config is not None:
            base = _read_config(config)
        problem = problem or base.get("problem")
        if not problem:
            raise fail("--problem is required (or a --config file that names one)")
        options: dict[str, Any] = dict(base.get("problem_options") or {})
        for key, value in (("tasks", tasks), ("data", data), ("target", target)):
            if value is not None and value != []:
                options[key] = value
        options.update(parse_options(option, "--option"))
        overrides: dict[str, Any] = {
            "strategy": strategy,
            "lr_shared": lr_shared,
            "lr_heads": lr_heads,
            "lr_weighting": lr_weighting,
            "optimizer": optimizer,
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "schedule": schedule,
            "warmup": warmup,
            "clip_grad": clip_grad,
            "precision": precision,
        }
        cfg = dict(base.get("config", {}))
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        if weights:
            cfg["weights"] = parse_assignments(weights, "--weights")
            cfg.setdefault("strategy", "static")
        if alpha is not None or strategy_option:
            given = {"alpha": alpha} if alpha is not None else {}
            given.update(parse_options(strategy_option, "--strategy-option"))
            cfg["strategy_options"] = {**cfg.get("strategy_options", {}), **given}
        if lr_head:
            cfg["lr_head"] = parse_assignments(lr_head, "--lr-head")
        if chain:
            cfg["chain"] = _parse_chain(chain)
        if model:
            cfg["model"] = {**cfg.get("model", {}), **parse_options(model, "--model")}
        train_config = TrainConfig.model_validate(cfg)
        prob = create_problem(problem, options)
        try:
            result = run_training(prob, train_config, device=device)
        except NonFiniteLossError as exc:
            raise fail(f"training diverged: {exc}; try a smaller learning rate", code=1) from None
        if save is not None:
            from tuner.checkpoint import save_model

            save_model(result, save, problem_options=options)

    for note in getattr(prob, "notes", []):  # what a problem did to the data (csv: imputation, encodings)
        err_console.print(f"note: {note}", highlight=False)
    if as_json:
        out = result.to_json()
        out["problem_options"] = _jsonable(options)
        typer.echo(json.dumps(out))
        return
    print_result(result, prob.tasks)
    if save is not None:
        console.print(f"wrote the trained model to {save}")


def _parse_chain(spec: str) -> dict[str, Any]:
    from pydantic import ValidationError

    from tuner.config import Chain

    try:
        return Chain.parse(spec).model_dump()
    except ValidationError as exc:
        raise fail(f"--chain {spec!r}: {validation_message(exc)}") from None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        raise fail(f"--config: file {str(path)!r} not found") from None
    except json.JSONDecodeError as exc:
        raise fail(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise fail(f"--config {path}: expected a JSON object")
    if "config" not in loaded:  # a bare TrainConfig
        loaded = {"config": loaded}
    return loaded


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


def print_result(result: TrainResult, tasks: list[Task]) -> None:
    """Per task: the validation loss and metric (with its direction), the loss weight, sigma, and the test split's
    metric when the problem has one."""
    final = result.final
    columns = ["task", "metric", "val loss", "val metric", "loss weight", "sigma"]
    if result.test is not None:
        columns.append("test metric")
    table = Table(*columns, title=f"{result.problem} on {result.device}")
    for task in tasks:
        t = final.tasks[task.name]
        arrow = "↑" if task.direction == "maximize" else "↓"
        sigma = f"{t.sigma:.4g}" if t.sigma is not None else "-"
        row = [task.name, f"{task.metric_name} {arrow}", f"{t.val_loss:.4g}", f"{t.metric:.4g}", f"{t.weight:.4g}"]
        row.append(sigma)
        if result.test is not None:
            row.append(f"{result.test[task.name]['metric']:.4g}")
        table.add_row(*row)
    console.print(table)
    console.print(f"objective (mean val loss / untrained val loss): [bold]{result.objective:.4f}[/]")
