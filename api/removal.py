"""Deleting a study: Optuna's study, then the job (its claims, metrics and summaries go by cascade)."""

from __future__ import annotations

from contextlib import suppress

from sqlalchemy.orm import Session

import storage


def delete_study(url: str, session: Session, name: str) -> None:
    """Raises ``storage.StudyNotFound``; a job whose Optuna study is already gone is still deleted."""
    import optuna

    storage.get_job(session, name)
    session.rollback()  # end the read, so deleting the job below starts with the write lock
    with suppress(KeyError):
        optuna.delete_study(study_name=name, storage=storage.optuna_storage(url))
    storage.delete_job(session, name)
    session.commit()
