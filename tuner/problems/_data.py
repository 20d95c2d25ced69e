"""Data: in-memory tensors (kept on the device and sliced) or any iterable of ``(inputs, targets)`` batches.

Inputs may be any structure of tensors (a tensor, or dicts, lists and tuples of them, e.g. int64 ids beside float
features); targets are a mapping from task name to a tensor or a ``Masked`` target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor

from tuner.problems._task import Masked

Batch: TypeAlias = tuple[Any, Mapping[str, Any]]


def tree_map(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """Apply ``fn`` to every tensor of a structure of dicts, lists and tuples (named tuples keep their type)."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tree_map(fn, v) for v in tree))
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, v) for v in tree)
    return tree


def first_tensor(tree: Any) -> Tensor:
    """The first tensor of a structure (its first dimension is the batch's size)."""
    if isinstance(tree, Tensor):
        return tree
    values = tree.values() if isinstance(tree, Mapping) else tree if isinstance(tree, list | tuple) else ()
    for value in values:
        try:
            return first_tensor(value)
        except ValueError:
            continue
    raise ValueError("a batch's inputs hold no tensor")


def to_device(tree: Any, device: torch.device) -> Any:
    """Move a batch; pinned host memory is copied without blocking."""
    return tree_map(lambda t: t.to(device, non_blocking=t.is_pinned()), tree)


@dataclass
class Split:
    """One split held in memory: ``inputs`` (a tensor or a structure of tensors, samples along dim 0) and
    ``targets`` per task (a tensor or a ``Masked`` target). Training keeps it on the device and slices it."""

    inputs: Any
    targets: dict[str, Tensor | Masked]

    def __len__(self) -> int:
        return int(first_tensor(self.inputs).shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(to_device(self.inputs, device), to_device(self.targets, device))

    def take(self, index: Tensor | slice) -> Batch:
        """The rows ``index`` (a tensor of row numbers, or a slice) as one batch."""
        return tree_map(lambda t: t[index], self.inputs), tree_map(lambda t: t[index], self.targets)

    def batches(self, batch_size: int, order: Tensor | None = None) -> Iterator[Batch]:
        n = len(self)
        for start in range(0, n, batch_size):
            yield self.take(
                order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            )


#: A split is held in memory, or is any re-iterable source of batches (a ``DataLoader``: map-style or iterable
#: dataset, custom collate, workers, pinned memory); a streamed split is never materialised.
SplitLike: TypeAlias = Split | Iterable[Batch]


@dataclass
class Dataset:
    """Train and validation splits and an optional test split (held out from selection; verdicts use it)."""

    train: SplitLike
    val: SplitLike
    test: SplitLike | None = None


def iterate(split: SplitLike, device: torch.device, batch_size: int, order: Tensor | None = None) -> Iterator[Batch]:
    """A split's batches on ``device``: sliced from memory (in ``order`` when given) or streamed from its source."""
    if isinstance(split, Split):
        yield from split.batches(batch_size, order)
        return
    for batch in split:
        if not (isinstance(batch, tuple | list) and len(batch) == 2 and isinstance(batch[1], Mapping)):
            raise TypeError("a data loader must yield (inputs, targets) pairs with targets a mapping by task name")
        yield to_device(batch[0], device), to_device(batch[1], device)
