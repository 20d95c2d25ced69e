"""``serve --demo``: a first start launches the demo study; a database that has a study is left as it is."""

from __future__ import annotations

from pathlib import Path

import storage
from mtl_tune_cli._demo import DEMO_STRATEGIES, DEMO_STUDY, launch_demo
from tuner.weighting import STRATEGIES


def test_the_demo_is_launched_once_with_registered_strategies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    storage.ensure_schema(url)
    launch_demo(url)
    with storage.session_scope(url) as session:
        jobs = storage.list_jobs(session)
        assert [j.study_name for j in jobs] == [DEMO_STUDY]
        assert jobs[0].space is not None and jobs[0].space["strategy"] == DEMO_STRATEGIES
    assert set(DEMO_STRATEGIES) <= set(STRATEGIES)
    launch_demo(url)  # a second start: nothing new
    with storage.session_scope(url) as session:
        assert len(storage.list_jobs(session)) == 1
