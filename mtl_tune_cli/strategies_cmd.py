"""``mtl-tune strategies``: the loss-weighting strategies a study can search, with their own knobs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mtl_tune_cli._common import console, print_table
from mtl_tune_cli.problems_cmd import knobs_text


def strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, as GET /api/strategies.")] = False,
) -> None:
    """List every strategy (equal first, the baseline's) with its knobs: default [default search range]."""
    from api.catalog import strategies as listed
    from tuner.weighting import STRATEGIES

    found = listed()
    if as_json:
        console.print_json(json.dumps([s.model_dump(mode="json") for s in found]))
        return
    table = Table("strategy", "knobs (space: strategies.<strategy>.<knob>)", "method", show_lines=True)
    for info in found:
        table.add_row(escape(info.name), escape(knobs_text(STRATEGIES[info.name].knobs)), escape(info.description))
    print_table(table)
