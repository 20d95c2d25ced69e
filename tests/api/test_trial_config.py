"""A trial's configuration as training ran it: values the recorded one leaves to the problem (the baseline's
learning rates) are shown as the problem's defaults, never as null."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import storage
from tests.api.helpers import client_for, database, run_study
from tuner.problems import create_problem


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with database("sqlite", tmp_path_factory.mktemp("config")) as url:
        run_study(url, name="s", n_trials=2, sampler="random", pruner="none", space={"strategy": "uncertainty"})
        yield url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[TestClient]:
    with client_for(url) as client:
        yield client


def test_the_baseline_shows_the_defaults_it_trained_with(client: TestClient) -> None:
    config = client.get("/api/studies/s/trials/0").json()["config"]
    d = create_problem("uncertainty-toy").defaults
    assert (config["lr_shared"], config["lr_heads"], config["lr_weighting"]) == (
        d.lr_shared,
        d.lr_heads,
        d.lr_weighting,
    )
    assert config["batch_size"] == d.batch_size and config["epochs"] == 2
    assert config["model"] == {"hidden": 64, "depth": 1}
    assert config["strategy"] == "equal"


def test_a_sampled_trial_keeps_its_sampled_values(client: TestClient) -> None:
    trial = client.get("/api/studies/s/trials/1").json()
    assert trial["config"]["lr_shared"] == pytest.approx(trial["params"]["lr_shared"])
    assert trial["config"]["lr_weighting"] == pytest.approx(trial["params"]["lr_weighting"])


def test_a_configuration_that_no_longer_resolves_is_shown_as_recorded(url: str, tmp_path: Path) -> None:
    with storage.session_scope(url) as session:
        job = storage.find_job(session, "s")
        assert job is not None
        job.problem = "a-plugin-since-removed"
    try:
        with client_for(url) as client:
            config = client.get("/api/studies/s/trials/0").json()["config"]
        assert config["lr_shared"] is None and config["strategy"] == "equal"
    finally:
        with storage.session_scope(url) as session:
            job = storage.find_job(session, "s")
            assert job is not None
            job.problem = "uncertainty-toy"
