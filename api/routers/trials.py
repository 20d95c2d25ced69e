"""A study's trials: server-side pages, compact history, one trial with its curves, and warm-start enqueuing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from api import enqueue, views
from api.deps import Authorized, JobDep, SessionDep, SettingsDep, TrialNumber
from api.schemas import INT32_MAX, Enqueued, EnqueueRequest, History, TrialDetail, TrialOrder, TrialPage
from api.trial_detail import trial_detail
from storage import queries as q

router = APIRouter(prefix="/studies/{name}", tags=["trials"])

_ERRORS: dict[int | str, dict[str, str]] = {404: {"description": "no such study or trial"}}
TrialState = Annotated[
    str | None, Query(pattern="^(complete|pruned|failed|interrupted)$", description="only trials in it")
]


@router.get("/trials", responses=_ERRORS)
def list_trials(
    session: SessionDep,
    job: JobDep,
    state: TrialState = None,
    order: TrialOrder = "number",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> TrialPage:
    """Finished trials, one page at a time; missing objective values and durations sort last."""
    total, rows = q.trial_page(session, job_id=job.id, state=state, order=order, limit=limit, offset=offset)
    return TrialPage(total=total, limit=limit, offset=offset, items=views.trial_rows(session, job, rows))


@router.get("/history", response_model=History, responses=_ERRORS)
def history(
    session: SessionDep,
    job: JobDep,
    after: Annotated[int, Query(ge=-1, le=INT32_MAX, description="only trials numbered above")] = -1,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="at most this many")] = None,
) -> Response:
    """Finished trials numbered above ``after``, compact, for plots that refresh incrementally.

    Every trial of a large study is one request: the body is built without a model per trial.
    """
    rows = q.history(session, job_id=job.id, after=after, limit=limit, values=job.objective != "scalar")
    return JSONResponse({"items": [views.history_item(*row) for row in rows]})


@router.get("/trials/{number}", responses=_ERRORS)
def get_trial(
    settings: SettingsDep,
    session: SessionDep,
    job: JobDep,
    number: TrialNumber,
    after_epoch: Annotated[int | None, Query(ge=-1, le=INT32_MAX, description="only later epochs")] = None,
) -> TrialDetail:
    """One trial (running ones too) with its per-epoch per-task curves and loss weights."""
    return trial_detail(settings.storage, session, job, number, after_epoch=after_epoch)


@router.post("/trials", status_code=202, dependencies=[Authorized], responses=_ERRORS)
def enqueue_trial(settings: SettingsDep, session: SessionDep, job: JobDep, body: EnqueueRequest) -> Enqueued:
    """Queue a configuration for the study to evaluate next (a completed study gets one more trial)."""
    tasks = [t.name for t in views.study_tasks(session, job)]
    enqueue.check(body.params, job.space or {}, tasks)
    session.rollback()
    status = enqueue.enqueue(settings.storage, job.study_name, body.params)
    return Enqueued(study=job.study_name, params=body.params, status=status)
