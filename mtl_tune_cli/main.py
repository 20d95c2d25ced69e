"""``mtl-tune``: the entry point; each command group lives in its own module."""

from __future__ import annotations

from typing import Annotated

import typer

from mtl_tune_cli import db_cmd, problems_cmd, serve_cmd, strategies_cmd, study_cmd, train_cmd, worker_cmd

app = typer.Typer(
    name="mtl-tune",
    help="Hyperparameter optimisation for multi-task learning: loss weighting, per-group learning rates, "
    "task chaining and GradNorm alpha, searched with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            metavar="MODULE",
            help="Import this trusted module's problems (repeatable; adds to MTL_TUNE_PLUGINS, which the workers "
            "this command starts inherit). A module that fails is listed as broken by `mtl-tune problems`.",
        ),
    ] = None,
) -> None:
    if plugin:
        from tuner.problems import use_plugins  # imported only when asked: `mtl-tune --help` stays fast

        use_plugins(plugin)


app.command("problems")(problems_cmd.problems)
app.command("strategies")(strategies_cmd.strategies)
app.command("train")(train_cmd.train)
app.add_typer(study_cmd.app, name="study")
app.add_typer(db_cmd.app, name="db")
app.command("worker")(worker_cmd.worker)
app.command("serve")(serve_cmd.serve)


if __name__ == "__main__":
    app()
