"""The API's read queries on their own: page boundaries, missing values last, Pareto fronts."""

from __future__ import annotations

import random

import numpy as np
import pytest

import storage
from api.pareto import extend, front_mask, pareto_numbers
from storage import queries as q

JOB = {
    "problem": "uncertainty-toy", "problem_options": {}, "space": None, "objective": "scalar",
    "directions": ["minimize"], "sampler": "tpe", "pruner": "none", "epochs": 2, "n_trials": 10, "seed": 0,
    "source": "cli",
}  # fmt: skip


@pytest.fixture
def job_id(url: str) -> int:
    storage.ensure_schema(url)
    with storage.session_scope(url) as session:
        job = storage.create_job(session, study_name="q", **JOB)
        # Trials 0-9; every third failed (no objective, no duration), objectives shuffled.
        objectives = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]
        for n, value in enumerate(objectives):
            failed = n % 3 == 2
            storage.write_summary(
                session, job_id=job.id, trial_number=n, state="failed" if failed else "complete",
                values=None if failed else [value], params={"x": n}, task_metrics=None,
                duration_s=None if failed else float(10 - n), started_at=None, finished_at=None,
            )  # fmt: skip
        return job.id


@pytest.mark.parametrize("order", ["objective", "-objective", "duration_s", "-duration_s", "number", "-number"])
def test_pages_concatenate_to_the_full_order_with_missing_values_last(url: str, job_id: int, order: str) -> None:
    with storage.session_scope(url) as session:
        pages = [q.trial_page(session, job_id=job_id, state=None, order=order, limit=3, offset=o) for o in (0, 3, 6, 9)]
    assert {total for total, _ in pages} == {10}
    rows = [row for _, page in pages for row in page]
    assert sorted(r.trial_number for r in rows) == list(range(10))
    key = order.lstrip("-")
    key = "trial_number" if key == "number" else key
    values = [getattr(r, key) for r in rows]
    present = [v for v in values if v is not None]
    assert values == present + [None] * (len(values) - len(present))
    assert present == sorted(present, reverse=order.startswith("-"))


def test_state_filter_and_count(url: str, job_id: int) -> None:
    with storage.session_scope(url) as session:
        total, rows = q.trial_page(session, job_id=job_id, state="failed", order="-objective", limit=2, offset=1)
    assert total == 3
    assert [r.trial_number for r in rows] == [5, 8]


def test_history_after(url: str, job_id: int) -> None:
    with storage.session_scope(url) as session:
        assert [n for n, *_ in q.history(session, job_id=job_id, after=6, limit=None)] == [7, 8, 9]
        assert [n for n, *_ in q.history(session, job_id=job_id, after=-1, limit=2)] == [0, 1]


def _brute_front(points: np.ndarray) -> np.ndarray:
    n = len(points)
    return np.array([
        not any(np.all(points[j] <= points[i]) and np.any(points[j] < points[i]) for j in range(n) if j != i)
        for i in range(n)
    ])  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_front_mask_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(60, 3)).astype(float)  # small integers: many ties and duplicates
    assert np.array_equal(front_mask(points), _brute_front(points))


def test_pareto_numbers_follow_directions_and_skip_bad_values() -> None:
    rows = [(0, [1.0, 0.5]), (1, [2.0, 0.9]), (2, [0.5, 0.1]), (3, None), (4, [float("nan"), 1.0]), (5, [3.0])]
    # minimise the first, maximise the second: 1 (2.0, 0.9) and 0 (1.0, 0.5) and 2 (0.5, 0.1) trade off
    assert pareto_numbers(rows, ["minimize", "maximize"]) == [0, 1, 2]
    assert pareto_numbers(rows, ["minimize", "minimize"]) == [2]


def test_pareto_numbers_match_optuna() -> None:
    import optuna

    rng = random.Random(0)
    study = optuna.create_study(directions=["minimize", "maximize", "minimize"])
    for _ in range(200):
        study.add_trial(optuna.trial.create_trial(values=[rng.randint(0, 9), rng.random(), rng.random()]))
    rows = [(t.number, t.values) for t in study.trials]
    assert pareto_numbers(rows, ["minimize", "maximize", "minimize"]) == sorted(t.number for t in study.best_trials)


def test_front_of_a_large_study_is_fast() -> None:
    import time

    points = np.random.default_rng(0).random((100_000, 3))
    start = time.perf_counter()
    mask = front_mask(points)
    assert time.perf_counter() - start < 2.0
    assert mask.sum() > 0


def test_a_front_extended_batch_by_batch_equals_the_front_of_everything() -> None:
    rng = np.random.default_rng(1)
    rows = [(i + 1, i, [float(v) for v in rng.integers(0, 8, size=2)]) for i in range(300)]
    directions = ["minimize", "maximize"]
    front = None
    for start in range(0, 300, 37):
        front = extend(front, rows[start : start + 37], directions)
    assert front is not None and (front.complete, front.last_id) == (300, 300)
    assert front.numbers == pareto_numbers([(n, v) for _, n, v in rows], directions)


def test_optuna_trial_ids_of_interleaved_studies(url: str) -> None:
    import optuna

    rdb = storage.optuna_storage(url)
    studies = [optuna.create_study(study_name=name, storage=rdb) for name in ("a", "b")]
    for i in range(6):
        studies[i % 3 == 0].add_trial(optuna.trial.create_trial(value=float(i)))
    with storage.session_scope(url) as session:
        for study in studies:
            sid = study._study_id
            for trial in study.trials:
                expected = rdb.get_trial_id_from_study_id_trial_number(sid, trial.number)
                assert q.optuna_trial_id(session, study_id=sid, number=trial.number) == expected
            assert q.optuna_trial_id(session, study_id=sid, number=len(study.trials)) is None
