from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import storage


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    yield url
    storage.dispose_engines()
