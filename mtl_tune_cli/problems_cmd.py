"""``mtl-tune problems``: every working problem with its tasks and model knobs, and every broken plugin.

No problem's data is loaded: tasks that only the options or the data can tell are shown as declared by the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from mtl_tune_cli._common import print_table

if TYPE_CHECKING:
    from tuner.problems import Knob, Listed

DECLARED_BY_OPTIONS = "declared by the options"


def problems() -> None:
    """List every problem's tasks (kind, metric, direction) and model knobs, and each broken plugin's error."""
    from tuner.problems import listing

    found = listing()
    table = Table("problem", "tasks (kind, metric, direction)", "model knobs", "description", show_lines=True)
    for entry in found.problems:
        cells = (entry.cls.name, _tasks(entry), knobs_text(entry.cls.model_knobs), entry.cls.description)
        table.add_row(*map(escape, cells))
    print_table(table)
    if found.broken:
        broken = Table("plugin", "from", "error", title="broken plugins (every other problem works)")
        for plugin in found.broken:
            broken.add_row(escape(plugin.name), escape(plugin.source), escape(plugin.error))
        print_table(broken)


def _tasks(entry: Listed) -> str:
    from tuner.study import task_infos

    if entry.preview is None:
        return DECLARED_BY_OPTIONS
    return "\n".join(f"{t['name']} ({t['kind']}, {t['metric']}, {t['direction']})" for t in task_infos(entry.preview))


def knobs_text(knobs: Mapping[str, Knob]) -> str:
    return "\n".join(f"{name}={knob.default}{_range(knob)}" for name, knob in knobs.items()) or "-"


def _range(knob: Knob) -> str:
    if knob.choices is not None:
        return " {" + ", ".join(map(str, knob.choices)) + "}"
    if knob.low is not None and knob.high is not None:
        return f" [{knob.low:g}..{knob.high:g}{' log' if knob.log else ''}]"
    return ""
