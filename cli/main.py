"""``mtl-tune``: the entry point; each command group lives in its own module."""

from __future__ import annotations

import typer

from cli import db_cmd, problems_cmd, serve_cmd, study_cmd, train_cmd, worker_cmd

app = typer.Typer(
    name="mtl-tune",
    help="Hyperparameter optimisation for multi-task learning: loss weighting, per-group learning rates, "
    "task chaining and GradNorm alpha, searched with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("problems")(problems_cmd.problems)
app.command("train")(train_cmd.train)
app.add_typer(study_cmd.app, name="study")
app.add_typer(db_cmd.app, name="db")
app.command("worker")(worker_cmd.worker)
app.command("serve")(serve_cmd.serve)


if __name__ == "__main__":
    app()
