"""On PostgreSQL, a launch whose connections are dropped (``pg_terminate_backend``) at any of its steps leaves
nothing behind: no job without its Optuna study, no Optuna study without its job, and the name free to launch
again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import optuna
import pytest

import storage
from tests.dropped_connections import terminate_backends
from tests.pg import fresh_database
from tuner.study import StudySpec, create_study

SPEC = StudySpec(name="first", problem="uncertainty-toy", problem_options={"n_train": 64, "n_val": 32}, n_trials=2,
                 epochs=1, sampler="random")  # fmt: skip
# The launch's steps after the first write (the Optuna study row), each of which may meet the dropped connection.
STEPS = [(optuna.Study, "set_user_attr"), (optuna.Study, "enqueue_trial"), (storage, "create_job")]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.mark.parametrize(("owner", "name"), STEPS, ids=[name for _, name in STEPS])
def test_a_launch_whose_connections_drop_midway_leaves_nothing(pg_url: str, owner: Any, name: str) -> None:
    create_study(pg_url, SPEC.model_copy(update={"name": "warm"}), source="cli")  # connections pooled, then dropped
    real = getattr(owner, name)
    dropped: list[int] = []

    def dropping(*args: Any, **kwargs: Any) -> Any:
        if not dropped:
            dropped.append(terminate_backends(pg_url))
        return real(*args, **kwargs)

    with mock.patch.object(owner, name, dropping):
        try:
            create_study(pg_url, SPEC, source="rest")
            launched = True
        except (storage.StorageError, optuna.exceptions.StorageInternalError):
            launched = False
    assert dropped and dropped[0] > 0
    storage.dispose_engines()  # this process's own pooled connections were dropped too: read on new ones
    with storage.session_scope(pg_url) as session:
        job = storage.find_job(session, "first")
    in_optuna = "first" in {s.study_name for s in optuna.get_all_study_summaries(storage=pg_url)}
    assert (job is not None, in_optuna) == (launched, launched)
    if not launched:
        create_study(pg_url, SPEC, source="rest")  # the name is free
