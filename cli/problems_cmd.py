"""``mtl-tune problems``."""

from __future__ import annotations

from rich.table import Table

from cli._common import console, user_errors


def problems() -> None:
    """List the problems (built-in and plugins) with their tasks."""
    from tuner.problems import available_problems

    table = Table("problem", "tasks (kind, metric)", "description")
    with user_errors():
        registered = available_problems()
    for name, cls in sorted(registered.items()):
        try:
            tasks = ", ".join(f"{t.name} ({t.kind}, {t.metric_name})" for t in cls.create().tasks)
        except ValueError:
            tasks = "declared by the data (--target COLUMN:KIND)"
        table.add_row(name, tasks, cls.description)
    console.print(table)
