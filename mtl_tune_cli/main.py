"""``mtl-tune``: the entry point; each command group lives in its own module."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mtl_tune_cli import db_cmd, problems_cmd, serve_cmd, strategies_cmd, study_cmd, train_cmd, worker_cmd
from mtl_tune_cli._common import configure_logging


class _FlagsHelp(TyperGroup):
    """The command tree whose ``--help`` shows flags as flags: Typer's rich help prints a ``<bool>`` type after
    every flag (``--json <bool>``), which reads as an option that takes a value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _blank_flag_metavars(self)


def _blank_flag_metavars(command: Any) -> None:
    # An empty metavar is what the help prints instead of the type; the help option is made (and cached by the
    # command) here so that it gets one too.
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _blank_flag_metavars(sub)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mtl-tune {version('mtl-tune')}")
        raise typer.Exit()


app = typer.Typer(
    cls=_FlagsHelp,
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
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Show Optuna's and Alembic's INFO log lines (a new study, schema migrations)."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the installed version and exit."),
    ] = False,
) -> None:
    from api.workers import follow_parent

    follow_parent()  # first: a worker `serve` started ends with it, even while it is still starting
    configure_logging(verbose)
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
