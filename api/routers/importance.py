"""``GET /api/studies/{name}/importance``: cached parameter importances; computing never blocks the request."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from api.cache import job_key
from api.deps import ImportanceDep, JobDep, SessionDep, SettingsDep
from api.importance import Job
from api.schemas import Importance
from storage import queries as q

router = APIRouter(prefix="/studies/{name}", tags=["importance"])


@router.get("/importance", responses={404: {"description": "no study of that name"}})
def importance(settings: SettingsDep, session: SessionDep, job: JobDep, cache: ImportanceDep) -> Importance:
    """Ready, computing or unavailable; ``stale`` while a recomputation for newer trials runs."""
    direction: Literal["minimize", "maximize"] = "maximize" if job.directions[0] == "maximize" else "minimize"
    work = Job(url=settings.storage, key=job_key(session, job), job_id=job.id, study_name=job.study_name,
               direction=direction, objective=job.objective)  # fmt: skip
    return cache.get(work, complete=q.count_trials(session, job_id=job.id, state="complete"))
