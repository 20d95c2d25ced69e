"""Launching a study from a REST body: confine csv data paths, validate through the study layer, record the job.

``tuner`` (and torch) are imported here on first use only, so the API process loads them when a study is launched,
never to serve reads. Nothing in a request is imported or executed: the problem is looked up by registered name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from api.errors import invalid
from api.schemas import StudyCreate

_OPTION_PATH = re.compile(r"^problem '[^']*': ([A-Za-z_][\w.]*): ")
_SPACE_PATH = re.compile(r"^([A-Za-z_][\w.-]*): ")


def launch(url: str, body: StudyCreate, *, data_dir: Path) -> str:
    """Create the study and its queued job; returns the study's name.

    Raises ``RequestValidationError`` (422) naming the field, ``storage.StudyExists`` (409) or a
    ``storage.StorageError`` (503).
    """
    from tuner.limits import LimitError
    from tuner.problems import ProblemError
    from tuner.study import SpaceError, StudySpec, create_study

    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    if body.problem == "csv" and "data" in body.problem_options:
        fields["problem_options"] = {**body.problem_options, "data": data_path(data_dir, body.problem_options["data"])}
    try:
        spec = StudySpec.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise invalid([str(p) for p in err["loc"]], err["msg"]) from None
    try:
        return create_study(url, spec, source="rest").study_name
    except LimitError as exc:  # the operator's limits (MTL_TUNE_MAX_*) or a task name the database cannot hold
        raise invalid(list(exc.loc), str(exc)) from None
    except SpaceError as exc:
        raise invalid(space_loc(str(exc)), str(exc)) from None
    except ProblemError as exc:
        raise invalid(problem_loc(str(exc)), str(exc)) from None
    except OSError as exc:  # the csv file exists but cannot be read
        raise invalid(["problem_options", "data"], f"cannot read the data file: {exc.strerror}") from None
    except ValueError as exc:  # the storage layer's own checks (name length, choices)
        raise invalid(["name"] if "name" in str(exc) else [], str(exc)) from None


def data_path(data_dir: Path, value: object) -> str:
    """The csv file ``value`` names, inside ``data_dir``: relative, no ``..``, and no symlink leading out."""
    where = ["problem_options", "data"]
    if not isinstance(value, str) or not value.strip():
        raise invalid(where, "a path relative to the server's data directory is required")
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise invalid(where, "must be a relative path inside the server's data directory (no absolute path, no '..')")
    try:
        root = data_dir.resolve()
        full = (root / path).resolve()
    except (OSError, ValueError) as exc:
        raise invalid(where, f"not a usable path: {exc}") from None
    if not full.is_relative_to(root):
        raise invalid(where, "resolves outside the server's data directory")
    return str(full)


def space_loc(message: str) -> list[str]:
    """``space: lr_shared: ...`` or ``weights.t9: unknown task`` -> ``["space", "lr_shared"]`` / ``[..., "t9"]``."""
    rest = message.removeprefix("space: ")
    match = _SPACE_PATH.match(rest)
    parts = match.group(1).split(".") if match and match.group(1) != "space" else []
    return ["space", *parts]


def problem_loc(message: str) -> list[str]:
    """Where a problem error points: the problem name, one of its options, or the options as a whole."""
    if message.startswith("unknown problem") or message.startswith("problem plugin"):
        return ["problem"]
    match = _OPTION_PATH.match(message)
    if match:
        return ["problem_options", *match.group(1).split(".")]
    for option in ("target", "features", "data"):
        if option in message:
            return ["problem_options", option]
    return ["problem_options"]
