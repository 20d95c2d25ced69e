"""A worker too slow to keep its trial: another worker failed it as stale, and the slow one moves on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
from optuna.trial import TrialState

import storage
from tests.study.test_workers import launch
from tuner.study import Worker, WorkerSettings
from tuner.study import _trial as trial_module
from tuner.train import train


def test_a_trial_failed_elsewhere_ends_without_ending_the_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lost.db'}"
    launch(url, "lost", n_trials=2, epochs=3)
    failed_once: list[int] = []

    def slow_train(
        problem: Any, config: Any, *, device: Any = None, on_epoch_end: Callable | None = None, **kw: Any
    ) -> Any:
        def epoch_end(report: Any) -> None:
            if not failed_once and on_epoch_end is not None:
                # Meanwhile, another worker's stale-trial check fails this trial (Optuna's own storage).
                plain = optuna.storages.RDBStorage(storage.normalize_url(url))
                running = [t for t in plain.get_all_trials(1) if t.state == TrialState.RUNNING]
                plain.set_trial_state_values(
                    plain.get_trial_id_from_study_id_trial_number(1, running[0].number), TrialState.FAIL
                )
                plain.engine.dispose()
                failed_once.append(running[0].number)
            assert on_epoch_end is not None
            on_epoch_end(report)

        return train(problem, config, device=device, on_epoch_end=epoch_end, **kw)

    worker = Worker(WorkerSettings(url=url, study_name="lost", exit_when_idle=True, poll_seconds=0.1))
    with mock.patch.object(trial_module, "train", slow_train):
        assert worker.run() == 3  # the lost trial, then two that finish

    trials = optuna.load_study(study_name="lost", storage=url).get_trials()
    lost = trials[failed_once[0]]
    assert lost.state == TrialState.FAIL and lost.intermediate_values == {}
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    with storage.session_scope(url) as session:
        counts = storage.claim_counts(session, "lost")
    assert counts == {"running": 0, "complete": 2, "pruned": 0, "failed": 1, "interrupted": 0}
