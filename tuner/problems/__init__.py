"""Built-in problems, the problem interface and the registry (entry-point plugins and the operator's plugin
modules; see ``_registry``)."""

from __future__ import annotations

from tuner.problems._base import (
    Defaults,
    Knob,
    ParameterGroups,
    Problem,
    ProblemOptions,
    check_groups,
    knob_values,
)
from tuner.problems._csv import CsvProblem
from tuner.problems._data import Batch, Dataset, Split, SplitLike, iterate, tree_map
from tuner.problems._digits import MultiDigits
from tuner.problems._listing import Listed, Listing, listing
from tuner.problems._metrics import METRIC_PRESETS, Direction, Metric
from tuner.problems._registry import (
    ENTRY_POINT_GROUP,
    PLUGINS_ENV,
    BrokenPlugin,
    Registry,
    available_problems,
    broken_problems,
    create_problem,
    plugin_modules,
    registry,
    use_plugins,
)
from tuner.problems._sharing import SharedBottom, mlp
from tuner.problems._task import LOSSES, Masked, ProblemError, Task
from tuner.problems._toys import GradNormToy, UncertaintyToy

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOSSES",
    "METRIC_PRESETS",
    "PLUGINS_ENV",
    "Batch",
    "BrokenPlugin",
    "CsvProblem",
    "Dataset",
    "Defaults",
    "Direction",
    "GradNormToy",
    "Knob",
    "Listed",
    "Listing",
    "Masked",
    "Metric",
    "MultiDigits",
    "ParameterGroups",
    "Problem",
    "ProblemError",
    "ProblemOptions",
    "Registry",
    "SharedBottom",
    "Split",
    "SplitLike",
    "Task",
    "UncertaintyToy",
    "available_problems",
    "broken_problems",
    "check_groups",
    "create_problem",
    "iterate",
    "knob_values",
    "listing",
    "mlp",
    "plugin_modules",
    "registry",
    "tree_map",
    "use_plugins",
]
