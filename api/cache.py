"""A small thread-safe LRU map for facts about studies that never change once known (ids, names, fronts)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from storage import StudyJob

K = TypeVar("K")
V = TypeVar("V")

JobKey = tuple[str, int, str]


class Lru(Generic[K, V]):
    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def job_key(session: Session, job: StudyJob) -> JobKey:
    """Identifies a job across databases and across a delete and re-create under the same name (or id)."""
    url = session.get_bind().engine.url.render_as_string(hide_password=False)
    return url, job.id, job.created_at.isoformat()
