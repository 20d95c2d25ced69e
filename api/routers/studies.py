"""Studies: launch, list, read, stop, resume, delete."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

import storage
from api import views
from api.deps import Authorized, JobDep, SessionDep, SettingsDep, StudyName
from api.launch import launch
from api.schemas import ConfirmRequest, StudyCreate, StudyDetail, StudyList, StudySummary, Verdict

router = APIRouter(prefix="/studies", tags=["studies"])

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "no study of that name"},
    503: {"description": "storage unreachable"},
}


@router.post("", status_code=201, dependencies=[Authorized],
             responses={409: {"description": "a study of that name exists"}, 503: _ERRORS[503]})  # fmt: skip
def create_study(body: StudyCreate, settings: SettingsDep, session: SessionDep) -> StudyDetail:
    """Record the study and its job (workers pick it up); 422 names the offending field."""
    name = launch(settings.storage, body, data_dir=settings.data_dir)
    return views.study_detail(session, storage.get_job(session, name))


@router.get("", responses={503: _ERRORS[503]})
def list_studies(session: SessionDep) -> StudyList:
    return StudyList(studies=views.study_summaries(session))


@router.get("/{name}", responses=_ERRORS)
def get_study(session: SessionDep, job: JobDep) -> StudyDetail:
    return views.study_detail(session, job)


@router.post("/{name}/stop", dependencies=[Authorized], responses=_ERRORS)
def stop_study(session: SessionDep, name: StudyName) -> StudySummary:
    """``stopping`` while trials still run (each ends after its current epoch), then ``stopped``."""
    storage.request_stop(session, name)
    session.commit()
    return views.study_summary(session, storage.get_job(session, name))


@router.post("/{name}/resume", dependencies=[Authorized], responses=_ERRORS)
def resume_study(session: SessionDep, name: StudyName) -> StudySummary:
    """Queue a stopped, failed or completed study again; workers fill its missing trials."""
    storage.resume(session, name)
    session.commit()
    return views.study_summary(session, storage.get_job(session, name))


@router.post("/{name}/confirm", status_code=202, dependencies=[Authorized],
             responses={**_ERRORS, 409: {"description": "no trial has completed yet"}})  # fmt: skip
def confirm_study(settings: SettingsDep, session: SessionDep, name: StudyName, body: ConfirmRequest) -> Verdict:
    """Train the baseline, the ``top`` best configurations and each strategy's best (a pareto study's Pareto set)
    again with ``seeds`` fresh seeds, through the workers; ``GET .../verdict`` follows them. The runs never count
    toward the study's target and never reach its sampler."""
    from storage.confirmations import NothingToConfirm, request_confirmation
    from tuner.verdict import study_verdict

    try:
        request_confirmation(session, name, seeds=body.seeds, top=body.top)
    except NothingToConfirm as exc:
        raise HTTPException(409, str(exc)) from None
    session.commit()
    return Verdict.model_validate(study_verdict(settings.storage, name))


@router.get("/{name}/verdict", responses=_ERRORS)
def get_verdict(settings: SettingsDep, name: StudyName) -> Verdict:
    """The verdict of the study's confirmation: each task's held-out metric, mean ± std over seeds, for the baseline
    and every confirmed configuration, the difference to the baseline with its 95 % interval (paired by seed), and
    which strategies tuned static weighting dominates."""
    from tuner.verdict import study_verdict

    return Verdict.model_validate(study_verdict(settings.storage, name))


@router.delete("/{name}", status_code=204, dependencies=[Authorized], responses=_ERRORS)
def remove_study(settings: SettingsDep, name: StudyName) -> Response:
    """The Optuna study, the job and every recorded metric (as ``mtl-tune study delete``)."""
    from storage.reports import delete_study

    delete_study(settings.storage, name)
    return Response(status_code=204)
