"""``mtl-tune problems``: every working problem with its tasks and model knobs, and every broken plugin; with
``--options PROBLEM``, the options that problem takes (``--option KEY=VALUE`` of ``train`` and ``study run``).

No problem's data is loaded: tasks that only the options or the data can tell are shown as declared by the options.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mtl_tune_cli._common import fail, print_table

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from tuner.problems import Knob, Listed

DECLARED_BY_OPTIONS = "declared by the options"


def problems(
    options: Annotated[
        str | None,
        typer.Option(
            "--options",
            metavar="PROBLEM",
            help="List the options PROBLEM takes (`--option KEY=VALUE` of `train` and `study run`) instead.",
        ),
    ] = None,
) -> None:
    """List every problem's tasks (kind, metric, direction) and model knobs, and each broken plugin's error."""
    from tuner.problems import listing

    if options is not None:
        _options(options)
        return

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


def _options(name: str) -> None:
    from tuner.problems import registry

    reg = registry()
    if name not in reg.problems:
        broken = reg.broken_named(name)
        message = (
            broken.message if broken else f"unknown problem {name!r}; available: {', '.join(sorted(reg.problems))}"
        )
        raise fail(message)
    table = Table("option", "type", "default", "allowed", "description", title=f"options of {name}", show_lines=True)
    for key, field in reg.problems[name].Options.model_fields.items():
        table.add_row(*map(escape, (key, _type(field), _default(field), _allowed(field), field.description or "")))
    print_table(table)


def _type(field: FieldInfo) -> str:
    annotation = field.annotation
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return {"Path": "path", "NoneType": "none"}.get(text, text).replace("pathlib.Path", "path")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value: Any = field.get_default(call_default_factory=True)
    return "-" if value is None else json.dumps(value, default=str)


def _allowed(field: FieldInfo) -> str:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [f"{symbols[k]} {getattr(m, k)}" for m in field.metadata for k in symbols if hasattr(m, k)]
    return ", ".join(bounds)
