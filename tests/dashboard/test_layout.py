"""The dashboard's layout in Debian's headless Chromium, against the real app: nothing scrolls sideways at 800 px,
progress bars line up, right-hand axis titles stay clear of their tick labels, the baseline's configuration shows
the defaults it trained with, and log-sampled parameters get log axes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import storage
from tests.dashboard.server import serve
from tests.study.helpers import QUICK_SPACE
from tuner.study import StudySpec, Worker, WorkerSettings, create_study

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TINY = {"n_train": 200, "n_val": 100}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[str]:
    """A finished scalar study (the default space: log-uniform learning rates), a finished pareto study and a queued
    one with a longer progress label."""
    url = f"sqlite:///{tmp_path_factory.mktemp('layout') / 'studies.db'}"
    common = {"problem": "uncertainty-toy", "problem_options": TINY, "epochs": 2, "sampler": "random"}
    for spec in (
        StudySpec(name="scalar", n_trials=4, pruner="none", space={"strategy": QUICK_SPACE["strategy"]}, **common),
        StudySpec(name="pareto", n_trials=3, objective="pareto", **common),
        StudySpec(name="queued", n_trials=120, **common),
    ):
        create_study(url, spec, source="cli")
    for name in ("scalar", "pareto"):
        Worker(WorkerSettings(url=url, study_name=name, exit_when_idle=True, device="cpu")).run()
    from api.main import create_app
    from api.settings import Settings

    with serve(create_app(Settings(storage=url))) as served:
        yield served
    storage.dispose_engines()


@pytest.fixture
def narrow(page: Any) -> Any:
    page.set_viewport_size({"width": 800, "height": 900})
    return page


def test_no_page_scrolls_sideways_at_800_px(narrow: Any, base_url: str) -> None:
    pages = {
        "/": "#studies tbody tr[data-name=queued]",
        "/studies/scalar": "#verdict-table tr[data-task]",  # confirmed when it reached its target
        "/studies/pareto": "#trials tbody tr[data-number='2']",
        "/studies/scalar/trials/0": "#curve-0 .main-svg",
    }
    for path, ready in pages.items():
        narrow.goto(base_url + path)
        narrow.wait_for_selector(ready)
        narrow.wait_for_selector("#trials tbody tr[data-number]") if path.startswith(
            "/studies/"
        ) and "trials" not in path else None
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, f"{path} is {width} px wide at an 800 px viewport"


def test_progress_bars_line_up_whatever_their_labels(narrow: Any, base_url: str) -> None:
    narrow.goto(base_url + "/")
    narrow.wait_for_selector("#studies tbody tr[data-name=queued]")
    bars = narrow.eval_on_selector_all(
        "#studies tbody tr .progress",
        """nodes => nodes.map((n) => {
          const b = n.querySelector(".bar").getBoundingClientRect();
          return {label: n.querySelector(".label").textContent, left: b.left, right: b.right};
        })""",
    )
    assert {b["label"] for b in bars} >= {"0 / 120", "4 / 4"}
    assert len({(round(b["left"]), round(b["right"])) for b in bars}) == 1, bars


RIGHT_AXIS = """(id) => {
  const box = (n) => { const r = n.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
    bottom: r.bottom}; };
  const svg = document.querySelector(`#${id} .main-svg`);
  return {
    title: box(document.querySelector(`#${id} .g-y2title text`)),
    ticks: [...document.querySelectorAll(`#${id} .y2tick text`)].map(box),
    svg: box(svg),
  };
}"""


def _assert_right_title_clear(page: Any, plot: str) -> None:
    found = page.evaluate(RIGHT_AXIS, plot)
    assert found["ticks"], f"{plot} has no right-hand tick labels"
    # Right of every tick label (wherever the labels sit along the axis), and inside the picture.
    assert found["title"]["left"] >= max(tick["right"] for tick in found["ticks"]), (plot, found)
    assert found["title"]["right"] <= found["svg"]["right"] + 0.5, (plot, found)


def test_right_axis_titles_stay_clear_of_wide_tick_labels(page: Any, base_url: str) -> None:
    page.goto(base_url + "/studies/pareto")
    page.wait_for_selector("#history-plot .g-y2title text")
    _assert_right_title_clear(page, "history-plot")
    # Values whose tick labels are as wide as any metric's: the margin must grow with them.
    page.evaluate(
        """() => new Promise((done) => {
          const node = document.getElementById("history-plot");
          node.once("plotly_afterplot", done);
          Plotly.restyle(node, {y: [[123456.7, 123999.1, 124500.2]]}, [1]);
        })"""
    )
    _assert_right_title_clear(page, "history-plot")
    page.goto(base_url + "/studies/scalar/trials/0")  # rmse, not the loss: drawn on the right-hand axis
    page.wait_for_selector("#curve-0 .g-y2title text")
    _assert_right_title_clear(page, "curve-0")


def test_the_baseline_configuration_shows_the_defaults_it_used(page: Any, base_url: str) -> None:
    page.goto(base_url + "/studies/scalar/trials/0")
    page.wait_for_function("document.querySelector('#config').textContent.length > 2")
    config = json.loads(page.inner_text("#config"))
    assert (config["lr_shared"], config["lr_heads"], config["lr_weighting"]) == (1e-2, 1e-2, 0.2)
    assert config["batch_size"] == 100


def test_log_sampled_parameters_get_log_axes(page: Any, base_url: str) -> None:
    page.goto(base_url + "/studies/scalar")
    page.wait_for_selector("#parallel-plot .main-svg")
    labels = page.locator("#parallel-plot .axis-title").all_text_contents()
    assert {"lr_shared (log)", "lr_heads (log)"} <= set(labels), labels
    assert "strategy" in labels
    found = page.evaluate(
        """async () => {
          const t = await import("/static/traces.js");
          const space = {lr_shared: {low: 1e-4, high: 1e-1, log: true}, warmup: {low: 0, high: 0.5, log: false},
            weights: {low: 0.1, high: 10, log: true}, strategies: {dwa: {temperature: {low: 1, high: 500, log: false}}},
            lr_head: {y1: {low: 1e-3, high: 1e-1, log: true}}, model: {hidden: {low: 8, high: 64, log: true}}};
          const rows = [
            {objective: 1, params: {lr_shared: 3e-3, warmup: 0.1, weight_y1: 2, "dwa.temperature": 1, lr_head_y1: 0.01,
              model_hidden: 8, other: 1}},
            {objective: 2, params: {lr_shared: 9e-3, warmup: 0.4, weight_y1: 3, "dwa.temperature": 400,
              lr_head_y1: 0.02, model_hidden: 16, other: 1000}},
          ];
          const dims = t.parallelTraces(rows, {space})[0].dimensions;
          return Object.fromEntries(dims.map((d) => [d.label, d.ticktext || null]));
        }"""
    )
    # Log where the space samples log-uniformly, however narrow the sampled values; linear where it says so;
    # without a word from the space, a range over two decades is drawn on a log axis.
    assert set(found) == {"lr_shared (log)", "warmup", "weight_y1 (log)", "dwa.temperature", "lr_head_y1 (log)",
                          "model_hidden (log)", "other (log)", "objective"}  # fmt: skip
    assert len(found["lr_shared (log)"]) >= 2
