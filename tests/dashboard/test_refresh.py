"""In a real browser, against a stand-in API that moves on when told: running pages fetch only what is new and
stop refreshing once the study settles. Playwright's clock drives the pages' timers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.dashboard.server import serve
from tests.dashboard.stub_api import StubApi

pytestmark = pytest.mark.browser
TICK_MS = 4100  # a little more than the pages' refresh period


@pytest.fixture
def stub() -> StubApi:
    return StubApi(n_trials=3, epochs=2)


@pytest.fixture
def base_url(stub: StubApi) -> Iterator[str]:
    with serve(stub.app()) as url:
        yield url


def advance(stub: StubApi, steps: int) -> None:
    for _ in range(steps):
        stub.advance()


def tick(page: Any) -> None:
    page.clock.run_for(TICK_MS)


def test_study_page_fetches_new_history_only_and_stops_when_completed(page: Any, stub: StubApi, base_url: str) -> None:
    advance(stub, 3)  # trial 0 complete (2 epochs), trial 1 running
    page.clock.install()
    page.goto(f"{base_url}/studies/live")
    page.wait_for_selector('#trials tbody tr[data-number="1"]')
    assert stub.requests[-1] == "history?after=-1"  # the first load asks for everything
    assert page.is_visible("#live")

    advance(stub, 3)  # trial 1 complete, trial 2 running
    tick(page)
    page.wait_for_selector('#trials tbody tr[data-number="2"]')
    page.wait_for_function("document.querySelectorAll('#history-plot .scatterlayer .point').length === 2")
    assert stub.requests[-1] == "history?after=0"  # trial 0 is settled; 1 was still running

    advance(stub, 3)  # trial 2 complete: the study is completed
    tick(page)
    page.wait_for_selector("#study-status.status-completed")
    page.wait_for_selector("#live", state="hidden")  # after the tick's last fetches
    assert stub.requests[-1] == "history?after=1"
    seen = len(stub.requests)
    tick(page)
    tick(page)
    assert len(stub.requests) == seen


def test_trial_page_fetches_new_epochs_only(page: Any, stub: StubApi, base_url: str) -> None:
    advance(stub, 1)  # trial 0 has epoch 1 of 2
    page.clock.install()
    page.goto(f"{base_url}/studies/live/trials/0")
    page.wait_for_selector("#curves .main-svg")
    assert stub.requests[-1] == "trial/0?after_epoch=0"
    points = "document.querySelectorAll('#curve-0 .scatterlayer .trace:first-child .point').length"
    assert page.evaluate(points) == 1

    advance(stub, 1)
    tick(page)
    page.wait_for_function(f"{points} === 2")
    assert "trial/0?after_epoch=1" in stub.requests

    advance(stub, 1)  # trial 0 finishes
    tick(page)
    page.wait_for_selector("#trial-state.status-complete")
    seen = len(stub.requests)
    tick(page)
    assert len(stub.requests) == seen


@pytest.mark.parametrize(
    ("strategy", "charts"),
    [
        ("equal", {"weight": "loss weight per task"}),
        ("uncertainty", {"weight": "loss weight per task", "sigma": "σ per task (uncertainty weighting)"}),
        (
            "gradnorm",
            {
                "weight": "loss weight per task",
                "grad_norm": "gradient norm per task (GradNorm)",
                "grad_norm_target": "target gradient norm per task (GradNorm)",
            },
        ),
        ("conflicts", {"weight": "loss weight per task", "cosine": "cosine per task"}),  # a series no code knows
    ],
)
def test_trial_page_draws_one_chart_per_reported_series(page: Any, strategy: str, charts: dict[str, str]) -> None:
    stub = StubApi(n_trials=2, epochs=2, strategy=strategy)
    advance(stub, 5)  # the baseline complete, trial 1 with both its epochs
    with serve(stub.app()) as base_url:
        page.goto(f"{base_url}/studies/live/trials/1")
        for key in charts:
            page.wait_for_selector(f"#weighting-{key} .main-svg")
        captions = page.locator("#weighting figcaption").all_inner_texts()
        assert captions == list(charts.values())
        for key in charts:  # one line per task, one point per epoch
            assert page.locator(f"#weighting-{key} .scatterlayer .trace").count() == 2
            assert page.locator(f"#weighting-{key} .scatterlayer .trace:first-child .point").count() == 2


def test_trial_table_pages_on_the_server(page: Any) -> None:
    stub = StubApi(n_trials=60, epochs=1)
    advance(stub, 2 * 60)
    with serve(stub.app()) as base_url:
        page.goto(f"{base_url}/studies/live")
        page.wait_for_function("document.querySelector('#page-info').textContent === '1–50 of 60'")
        assert page.is_disabled("#prev")
        page.click("#next")
        page.wait_for_function("document.querySelector('#page-info').textContent === '51–60 of 60'")
        assert page.locator("#trials tbody tr").count() == 10
        assert page.is_disabled("#next")
        page.click("#prev")
        page.wait_for_function("document.querySelector('#page-info').textContent === '1–50 of 60'")


def test_plot_data_functions(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/")  # the study list: no plotly to parse
    result = page.evaluate(
        """async () => {
          const t = await import("/static/traces.js");
          const items = [
            {number: 0, state: "complete", objective: 3}, {number: 1, state: "running", objective: null},
            {number: 2, state: "pruned", objective: 5}, {number: 3, state: "complete", objective: 2},
          ];
          const dim = t.paramDimension("lr", [1e-4, null, 1e-1]);
          const cat = t.paramDimension("strategy", ["dwa", undefined, "equal"]);
          const seriesEpochs = [
            {epoch: 0, tasks: {a: {weight: 1, series: {}}, b: {weight: 2}}},
            {epoch: 1, tasks: {a: {weight: 3, series: {cosine: 0.5}},
                               b: {weight: 4, series: {cosine: -0.5, "k l": 1}}}},
          ];
          return {
            cursor: t.historyCursor(items),
            best: t.bestSoFar(items, "minimize"),
            bestMax: t.bestSoFar(items, "maximize").y,
            merged: t.mergeBy(items, [{number: 1, state: "complete", objective: 1}], "number").map((r) => r.state),
            dim: {label: dim.label, values: dim.values, ticktext: dim.ticktext},
            cat: {values: cat.values, ticktext: cat.ticktext},
            comparison: t.comparisonRows({acc: {metric: "accuracy", baseline: 0.5, best: 0.6, change: null}},
                                         [{name: "acc", direction: "maximize"}]),
            // the direction is the task's: a rise of a minimised "accuracy" is worse; without one, no verdict
            declared: t.comparisonRows({
              acc: {metric: "accuracy", direction: "minimize", baseline: 0.5, best: 0.6, change: 0.2},
              r2: {metric: "r2_score", baseline: 0.5, best: 0.4, change: -0.2},
              err: {metric: "rmse", baseline: 2, best: 1, change: -0.5},
            }, [{name: "r2", direction: "maximize"}]).map((r) => [r.task, r.direction, r.better]),
            weights: t.weightingTraces([{epoch: 1, tasks: {a: {weight: 1, series: {sigma: null}}}}], ["a"], "sigma")
              .length,
            cosine: t.weightingTraces(seriesEpochs, ["a", "b"], "cosine").map((tr) => [tr.name, tr.y]),
            weight: t.weightingTraces(seriesEpochs, ["a", "b"], "weight").map((tr) => tr.y),
            names: t.seriesNames(seriesEpochs),
            axes: t.parallelTraces([{objective: 1, params: {a: 1, b: 2, c: 3}}], {importances: {c: 0.9, b: 0.1}})[0]
              .dimensions.map((d) => d.label),
          };
        }"""
    )
    assert result["cursor"] == 0
    assert result["best"] == {"x": [0, 3], "y": [3, 2]}
    assert result["bestMax"] == [3, 3]
    assert result["merged"] == ["complete", "complete", "pruned", "complete"]
    assert result["dim"]["label"] == "lr (log)"
    assert result["dim"]["values"][0] == pytest.approx(-4) and result["dim"]["values"][2] == pytest.approx(-1)
    assert result["dim"]["values"][1] < -4 and result["dim"]["ticktext"][0] == "n/a"
    assert result["cat"] == {"values": [1, 0, 2], "ticktext": ["n/a", "dwa", "equal"]}
    (row,) = result["comparison"]
    assert row["change"] == pytest.approx(0.2) and row["better"] is True
    assert result["declared"] == [["acc", "minimize", False], ["r2", "maximize", False], ["err", None, None]]
    assert result["weights"] == 0
    assert result["cosine"] == [["a", [None, 0.5]], ["b", [None, -0.5]]]
    assert result["weight"] == [[1, 3], [2, 4]]
    assert result["names"] == ["cosine", "k l"]
    assert result["axes"] == ["c", "b", "a", "objective"]
