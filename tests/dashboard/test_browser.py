"""The dashboard in Debian's headless Chromium against the real app and a small study that really ran.

Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import storage
from api import catalog
from tests.dashboard.server import serve
from tests.plugins import BROKEN_IMPORT, WAVE
from tuner.study import StudySpec, Worker, WorkerSettings, create_study

pytestmark = [pytest.mark.browser, pytest.mark.slow]
STUDY = "toy"
SERIES_CAPTIONS = {
    "sigma": "σ per task (uncertainty weighting)",
    "grad_norm": "gradient norm per task (GradNorm)",
    "grad_norm_target": "target gradient norm per task (GradNorm)",
}
TOKEN = "dashboard-test-token"


@pytest.fixture(scope="module")
def storage_url(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[str]:
    """A SQLite database holding one finished four-trial study (run after the browser check, so skips are cheap)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'studies.db'}"
    spec = StudySpec(
        name=STUDY,
        problem="uncertainty-toy",
        problem_options={"n_train": 200, "n_val": 100},
        epochs=3,
        n_trials=4,
        sampler="random",
        # Strategies that report series besides the weight (sigma, GradNorm's norms, the aggregators' cosines).
        space={"strategy": ["uncertainty", "gradnorm", "upgrad"]},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        create_study(url, spec, source="cli")
        Worker(WorkerSettings(url=url, study_name=STUDY, exit_when_idle=True, device="cpu")).run()
    finally:
        torch.set_num_threads(threads)
    yield url
    storage.dispose_engines()


def _serve_app(url: str, token: str | None = None) -> Any:
    from api.main import create_app
    from api.settings import Settings

    return serve(create_app(Settings(storage=url, api_token=token)))


@pytest.fixture(scope="module")
def base_url(storage_url: str) -> Iterator[str]:
    with _serve_app(storage_url) as url:
        yield url


def _count(page: Any, selector: str) -> int:
    return int(page.locator(selector).count())


def test_list_study_and_trial_pages(page: Any, base_url: str, artifacts: Path) -> None:
    page.goto(f"{base_url}/")
    row = page.locator(f'#studies tbody tr[data-name="{STUDY}"]')
    row.wait_for()
    assert "completed" in row.inner_text()
    assert "uncertainty-toy" in row.inner_text()
    assert re.search(r"\b4 / 4\b", row.inner_text())
    page.screenshot(path=artifacts / "dashboard-studies.png", full_page=True)

    row.get_by_role("link", name=STUDY).click()
    page.wait_for_url(f"**/studies/{STUDY}")
    page.wait_for_selector("#history-plot .main-svg")
    page.wait_for_function("document.querySelectorAll('#history-plot .scatterlayer .point').length >= 1")
    page.wait_for_selector("#trials tbody tr[data-number]")
    total = int(page.inner_text("#page-info").split(" of ")[1])
    assert total >= 4
    assert _count(page, "#trials tbody tr[data-number]") == total
    assert page.inner_text("#best").startswith("trial #")
    page.wait_for_selector("#parallel-plot .main-svg")
    page.wait_for_timeout(300)  # let plotly finish its transitions before the picture
    page.screenshot(path=artifacts / "dashboard-study.png", full_page=True)

    best = page.inner_text("#best").split()[1]  # "trial #2 · objective ..."
    page.select_option("#order", "objective")
    page.wait_for_function(f"document.querySelector('#trials tbody tr a').textContent === '{best}'")
    page.select_option("#state-filter", "failed")
    page.wait_for_function("document.querySelector('#page-info').textContent === '0 trials'")
    page.select_option("#state-filter", "")
    page.select_option("#order", "number")
    page.wait_for_selector('#trials tbody tr[data-number="1"]')

    page.locator('#trials tbody tr[data-number="1"] a').first.click()
    page.wait_for_url(f"**/studies/{STUDY}/trials/1")
    page.wait_for_selector("#curve-1 .main-svg")
    assert [page.inner_text(f"#curves figure:nth-child({i}) figcaption") for i in (1, 2)] == ["y1", "y2"]
    for i in (0, 1):
        # train and validation loss, one point per epoch
        assert _count(page, f"#curve-{i} .scatterlayer .trace") >= 2
        assert _count(page, f"#curve-{i} .scatterlayer .trace:first-child .point") == 3
    page.wait_for_selector("#weighting-weight .main-svg")
    assert page.inner_text("#trial-state") in ("complete", "pruned")
    page.screenshot(path=artifacts / "dashboard-trial.png", full_page=True)

    # One chart per series a strategy reported, as the API serves them, on a trial whose strategy reported any.
    for number in range(1, total):
        epochs = page.request.get(f"{base_url}/api/studies/{STUDY}/trials/{number}").json()["epochs"]
        reported = list(dict.fromkeys(name for e in epochs for t in e["tasks"].values() for name in t["series"]))
        if reported:
            break
    assert reported, "no trial's strategy reported a series besides the weight"
    page.goto(f"{base_url}/studies/{STUDY}/trials/{number}")
    for name in reported:
        page.wait_for_selector(f"#weighting-{name} .main-svg")
    captions = page.locator("#weighting figcaption").all_inner_texts()
    assert captions == ["loss weight per task", *(SERIES_CAPTIONS.get(n, f"{n} per task") for n in reported)]


def test_launch_form_token_errors_and_stop(page: Any, storage_url: str, artifacts: Path) -> None:
    with _serve_app(storage_url, token=TOKEN) as base:
        page.goto(f"{base}/")
        page.wait_for_selector('#launch select[name=problem] option[value="uncertainty-toy"]', state="attached")
        form = page.locator("#launch")
        form.locator("select[name=problem]").select_option("uncertainty-toy")
        form.locator("input[name=name]").fill("from-form")
        form.locator("input[name=n_trials]").fill("2")
        form.locator("input[name=epochs]").fill("1")
        message = page.locator("#launch-message")

        form.get_by_role("button", name="Launch").click()
        page.wait_for_function("document.querySelector('#launch-message').textContent.includes('token')")

        form.locator("input[name=token]").fill(TOKEN)
        form.locator("textarea[name=space]").fill('{"strategy": ["no-such-strategy"]}')
        form.get_by_role("button", name="Launch").click()
        page.wait_for_function("/strategy/.test(document.querySelector('#launch-message').textContent)")
        assert "error" in (message.get_attribute("class") or "")
        page.screenshot(path=artifacts / "dashboard-launch-422.png", full_page=True)

        form.locator("textarea[name=space]").fill("")
        form.get_by_role("button", name="Launch").click()
        page.wait_for_function("document.querySelector('#launch-message').textContent.includes('launched')")
        row = page.locator('#studies tbody tr[data-name="from-form"]')
        row.wait_for()
        assert "queued" in row.inner_text()

        row.get_by_role("button", name="stop").click()  # the token comes from localStorage
        page.wait_for_function(
            "/stop/.test(document.querySelector('#studies tr[data-name=\"from-form\"] .badge').textContent)"
        )
        assert page.inner_text("#list-message") == ""


@pytest.fixture
def plugin_url(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch, browser: Any) -> Iterator[str]:
    """An empty database, served with a working and a broken plugin named by the operator."""
    monkeypatch.setenv("MTL_TUNE_PLUGINS", f"{WAVE},{BROKEN_IMPORT}")
    catalog.problems.cache_clear()
    url = f"sqlite:///{plugin_dir / 'studies.db'}"
    yield url
    catalog.problems.cache_clear()
    storage.dispose_engines()


def test_a_plugin_problem_from_the_form_with_its_declared_directions(
    page: Any, plugin_url: str, artifacts: Path
) -> None:
    with _serve_app(plugin_url) as base:
        page.goto(f"{base}/")
        page.wait_for_selector('#launch select[name=problem] option[value="plugin-wave"]', state="attached")
        form = page.locator("#launch")
        form.locator("select[name=problem]").select_option("plugin-wave")
        info = page.inner_text("#problem-info")
        assert "sin (regression, r2_score, maximize), sign (classification, accuracy, minimize)" in info
        assert "model knobs: width=8, depth=1" in info
        page.click("#broken-problems-summary")
        assert "this plugin cannot be imported" in page.inner_text("#broken-problems")
        form.locator("input[name=name]").fill("wave")
        form.locator("input[name=n_trials]").fill("2")
        form.locator("input[name=epochs]").fill("1")
        form.locator("select[name=pruner]").select_option("none")
        form.locator("textarea[name=problem_options]").fill('{"n": 40}')
        form.get_by_role("button", name="Launch").click()
        page.wait_for_function("document.querySelector('#launch-message').textContent.includes('launched')")
        page.screenshot(path=artifacts / "dashboard-plugin-launch.png", full_page=True)

        Worker(WorkerSettings(url=plugin_url, study_name="wave", exit_when_idle=True, device="cpu")).run()
        comparison = page.request.get(f"{base}/api/studies/wave").json()["comparison"]
        page.goto(f"{base}/studies/wave")
        for task, direction in (("sin", "maximize"), ("sign", "minimize")):
            row = page.locator(f'#comparison tr[data-task="{task}"]')
            row.wait_for()
            assert row.locator("td").nth(2).inner_text() == direction
            c = comparison[task]
            if c["best"] != c["baseline"]:  # "better" follows the task's direction, not the change's sign
                better = (c["best"] > c["baseline"]) == (direction == "maximize")
                assert row.get_attribute("data-better") == str(better).lower()
                # on validation data, the split that chose the best: plain numbers, not a headline's colours
                assert not {"better", "worse"} & set((row.locator("td").nth(5).get_attribute("class") or "").split())
