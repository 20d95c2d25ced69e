"""A study whose Optuna study was deleted with Optuna's own tools (``optuna.delete_study``, optuna-dashboard)."""

from __future__ import annotations

import optuna
import pytest

import storage
from storage.reports import best_config, delete_study, export_trials
from tests.storage.helpers import JOB_DEFAULTS, shown_states


def test_reports_name_the_problem_and_study_delete_removes_the_rest(storage_url: str) -> None:
    optuna.create_study(study_name="gone", storage=storage.optuna_storage(storage_url))
    with storage.session_scope(storage_url) as session:
        storage.create_job(session, study_name="gone", **JOB_DEFAULTS)
    optuna.delete_study(study_name="gone", storage=storage.normalize_url(storage_url))

    assert shown_states(storage_url, "gone") == {}  # ``study show`` reads mtl-tune's own tables
    for read in (best_config, lambda url, name: export_trials(url, name, "json")):
        with pytest.raises(storage.StudyNotFound, match="mtl-tune study delete gone"):
            read(storage_url, "gone")
    delete_study(storage_url, "gone")
    with storage.session_scope(storage_url) as session:
        assert storage.find_job(session, "gone") is None
    with pytest.raises(storage.StudyNotFound):
        delete_study(storage_url, "gone")
