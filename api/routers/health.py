"""``GET /api/health``: storage reachable, schema revision, workers alive. Always 200; ``status`` says how it is."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

import storage
from api.deps import SettingsDep, WorkerPoolDep
from api.schemas import Health
from storage import queries as q
from storage.models import utcnow

router = APIRouter(tags=["health"])


@router.get("/health")
def health(settings: SettingsDep, pool: WorkerPoolDep) -> Health:
    head = storage.head_revision()
    local = pool.alive() if pool is not None else []
    expected = pool.expected if pool is not None else 0
    workers = set(local)
    revision = None
    try:
        revision = storage.current_revision(settings.storage)
        with storage.session_scope(settings.storage) as session:
            since = utcnow() - timedelta(seconds=settings.worker_grace_seconds)
            workers |= q.live_workers(session, since=since) if revision is not None else set()
        reachable = True
    except storage.StorageError:
        reachable, revision = False, None
    ok = reachable and revision == head and len(local) >= expected
    return Health(status="ok" if ok else "degraded", storage=reachable, schema_revision=revision,
                        head_revision=head, workers_alive=len(workers), local_workers_expected=expected,
                        local_workers_alive=len(local))  # fmt: skip
