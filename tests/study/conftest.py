from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import storage


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    yield url
    storage.dispose_engines()
