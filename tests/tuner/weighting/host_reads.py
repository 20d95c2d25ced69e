"""A guard that fails a test when a tensor's value is read on the host (and so a GPU would be waited for)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# What reads a tensor's value on the host: methods, and the conversions Python calls for `if tensor:`,
# `float(tensor)`, `int(tensor)` and `range(tensor)`.
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


@contextmanager
def no_host_reads() -> Iterator[None]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a tensor was read on the host inside a training step")

    saved = {attr: getattr(torch.Tensor, attr) for attr in HOST_READS}
    for attr in HOST_READS:
        setattr(torch.Tensor, attr, refuse)
    try:
        yield
    finally:
        for attr, value in saved.items():
            setattr(torch.Tensor, attr, value)
