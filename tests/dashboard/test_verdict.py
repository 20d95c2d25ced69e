"""The study page's headline is the held-out verdict (``GET /studies/{name}/verdict``), in Debian's headless Chromium:
the test split's numbers for a study confirmed to completion, the button that asks for a confirmation, and, against
the stand-in API, the warning of a verdict judged on validation data and the chart of several pairs of tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import storage
from api.schemas import Verdict
from tests.dashboard.server import serve
from tests.dashboard.stub_api import StubApi, not_requested
from tests.study.helpers import TINY, run_study

pytestmark = [pytest.mark.browser]
TOKEN = "verdict-test-token"
TOKEN_KEY = "mtl-tune.api-token"
OPTIONS = {**TINY, "n_test": 150}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[tuple[str, str]]:
    """A study confirmed to completion over two seeds (static among its strategies: a scalarization block) and one
    that was never confirmed, served with a token (run after the browser check, so skips are cheap)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('verdict') / 'studies.db'}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_study(url, name="confirmed", n_trials=6, space={"strategy": ["equal", "static", "dwa"]},
                  problem_options=OPTIONS, confirm_seeds=2, seed=3)  # fmt: skip
        run_study(url, name="unconfirmed", n_trials=2, space={"strategy": ["equal", "dwa"]}, problem_options=OPTIONS)
    finally:
        torch.set_num_threads(threads)
    from api.main import create_app
    from api.settings import Settings

    with serve(create_app(Settings(storage=url, api_token=TOKEN))) as base:
        yield base, url
    storage.dispose_engines()


def _get(page: Any, url: str) -> Any:
    response = page.request.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.ok, response.text()
    return response.json()


def test_the_headline_is_the_test_split_verdict(page: Any, served: tuple[str, str], artifacts: Path) -> None:
    base, _ = served
    verdict = _get(page, f"{base}/api/studies/confirmed/verdict")
    detail = _get(page, f"{base}/api/studies/confirmed")
    assert (verdict["status"], verdict["split"], verdict["optimistic"]) == ("complete", "test", False)
    candidates = {c["trial"]: c for c in verdict["candidates"]}
    best = next(c for c in verdict["candidates"] if "best" in c["roles"])
    baseline = next(c for c in verdict["candidates"] if "baseline" in c["roles"])
    assert verdict["scalarization"] is not None

    page.goto(f"{base}/studies/confirmed")
    page.wait_for_selector("#verdict-table tr[data-task]")
    assert page.inner_text("#verdict-status") == "complete"
    assert page.inner_text("#verdict-sentence") == verdict["sentence"]
    assert page.is_hidden("#verdict-warning")
    assert page.locator("#confirm-button").count() == 0
    for task in verdict["tasks"]:
        row = page.locator(f'#verdict-table tr[data-task="{task["name"]}"]')
        cells = row.locator("td")
        arrow = "↓" if task["direction"] == "minimize" else "↑"
        assert cells.nth(1).inner_text() == f"{task['metric']} {arrow}"
        for column, candidate in ((2, baseline), (3, best)):
            numbers = candidate["tasks"][task["name"]]
            shown = cells.nth(column)
            assert float(shown.get_attribute("data-mean") or "nan") == pytest.approx(numbers["mean"])
            assert shown.inner_text().startswith(f"{numbers['mean']:.4g} ± ")
        # The test split's number, not the validation one that chose the best.
        validation = detail["comparison"][task["name"]]["best"]
        assert float(cells.nth(3).get_attribute("data-mean") or "nan") != pytest.approx(validation, rel=1e-4)
        assert "[" in cells.nth(4).inner_text() and "]" in cells.nth(4).inner_text()
        judgement = verdict["judgements"][task["name"]]
        assert cells.nth(5).inner_text() == judgement
        expected = {"better": "better", "worse": "worse"}.get(judgement, "noise")
        assert expected in (cells.nth(5).get_attribute("class") or "").split()

    # The validation comparison is still there, labelled as such and without a verdict's colours.
    page.wait_for_selector("#comparison tr[data-task]")
    assert page.inner_text("#comparison-split") == "validation (the split that chose the best; optimistic)"
    assert page.locator("#comparison .better, #comparison .worse").count() == 0

    # The scalarization chart: every static point and every other strategy's point, and its one line of text.
    scal = verdict["scalarization"]
    (pair,) = scal["pairs"]
    page.wait_for_selector("#scalar-plot .main-svg")
    assert page.is_hidden("#pair-choice")
    points = page.locator("#scalar-plot .scatterlayer .point").count()
    assert points == len(pair["static"]) + len(pair["others"])
    labels = page.locator("#scalar-plot .scatterlayer .textpoint").all_text_contents()
    assert sorted(labels) == sorted("default" if "baseline" in p["roles"] else p["strategy"] for p in pair["others"])
    none = lambda names: ", ".join(names) or "none"  # noqa: E731
    line = f"tuned static weighting dominates: {none(scal['dominated'])}; not dominated: {none(scal['not_dominated'])}"
    assert page.inner_text("#dominance") == line

    # Every confirmed configuration, linked to its trial.
    rows = page.locator("#confirmed-table tbody tr")
    assert rows.count() == len(candidates)
    for i in range(rows.count()):
        row = rows.nth(i)
        trial = int(row.get_attribute("data-trial") or "-1")
        cells = row.locator("td")
        assert cells.nth(0).inner_text() == f"#{trial}"
        assert cells.nth(1).inner_text() == ", ".join(candidates[trial]["roles"])
        assert cells.nth(3).inner_text() == str(len(candidates[trial]["seeds"]))
        better = [t for t, v in candidates[trial]["tasks"].items() if v["judgement"] == "better"]
        if "baseline" not in candidates[trial]["roles"]:
            assert cells.nth(4).inner_text() == (", ".join(better) or "none")
    page.wait_for_timeout(300)  # let plotly finish its transitions before the picture
    page.screenshot(path=artifacts / "dashboard-verdict.png", full_page=True)


def test_the_confirm_button_queues_a_confirmation(page: Any, served: tuple[str, str], artifacts: Path) -> None:
    base, _ = served
    assert _get(page, f"{base}/api/studies/unconfirmed/verdict")["status"] == "not requested"
    page.add_init_script(f"localStorage.setItem({TOKEN_KEY!r}, {TOKEN!r})")
    page.goto(f"{base}/studies/unconfirmed")
    page.wait_for_selector("#confirm-button")
    assert page.inner_text("#verdict-status") == "not requested"
    assert "validation data" in page.inner_text("#verdict-progress")
    assert "optimistic" in page.inner_text("#verdict-progress")
    assert page.is_hidden("#verdict-body")
    page.screenshot(path=artifacts / "dashboard-verdict-not-requested.png", full_page=True)

    page.click("#confirm-button")  # the token comes from localStorage
    page.wait_for_function("['pending', 'running'].includes(document.querySelector('#verdict-status').textContent)")
    assert page.inner_text("#verdict-message") == ""
    assert page.locator("#confirm-button").count() == 0
    assert "Confirming on held-out data" in page.inner_text("#verdict-progress")
    assert page.is_visible("#live")  # the page polls while the confirmation waits for workers
    assert _get(page, f"{base}/api/studies/unconfirmed/verdict")["status"] in ("pending", "running", "complete")


def _task(name: str, metric: str, direction: str) -> dict[str, str]:
    return {"name": name, "kind": "regression", "metric": metric, "direction": direction}


def _numbers(mean: float, diff: float, judgement: str) -> dict[str, Any]:
    interval = {"mean": diff, "low": diff - 0.1, "high": diff + 0.1, "n": 3}
    return {"mean": mean, "std": 0.05, "n": 3, "diff": interval, "judgement": judgement}


def _candidate(trial: int, roles: list[str], strategy: str, tasks: dict[str, Any]) -> dict[str, Any]:
    return {"trial": trial, "roles": roles, "strategy": strategy, "config": {}, "seeds": [1, 2, 3], "failed": [],
            "tasks": tasks}  # fmt: skip


def _optimistic_verdict() -> dict[str, Any]:
    """A verdict on validation data over three tasks (three pairs of tasks), as the API would serve it."""
    tasks = [_task("a", "rmse", "minimize"), _task("b", "accuracy", "maximize"), _task("c", "mae", "minimize")]
    zero = {t["name"]: _numbers(1.0, 0.0, "within noise") for t in tasks}
    best = {"a": _numbers(0.5, -0.5, "better"), "b": _numbers(0.7, -0.3, "worse")}
    best["c"] = _numbers(1.0, 0.0, "within noise")
    static = {"a": _numbers(0.4, -0.6, "better"), "b": _numbers(1.2, 0.2, "better")}
    static["c"] = _numbers(0.9, -0.1, "better")

    def point(c: dict[str, Any], x: str, y: str, **extra: Any) -> dict[str, Any]:
        return {"trial": c["trial"], "x": c["tasks"][x]["mean"], "y": c["tasks"][y]["mean"], **extra}

    candidates = [
        _candidate(0, ["baseline", "best equal"], "equal", zero),
        _candidate(4, ["best", "best dwa"], "dwa", best),
        _candidate(7, ["best static", "static front"], "static", static),
    ]
    pairs = [
        {
            "tasks": [x, y],
            "static": [point(candidates[2], x, y, front=True)],
            "others": [
                point(c, x, y, strategy=c["strategy"], roles=c["roles"], dominated=True) for c in candidates[:2]
            ],
        }
        for x, y in (("a", "b"), ("a", "c"), ("b", "c"))
    ]
    verdict = not_requested("live") | {
        "status": "complete",
        "runs": {"queued": 0, "running": 0, "complete": 9, "failed": 0},
        "seeds": [1, 2, 3],
        "split": "validation",
        "optimistic": True,
        "provisional": False,
        "tasks": tasks,
        "candidates": candidates,
        "judgements": {t: v["judgement"] for t, v in best.items()},
        "sentence": "tuning beats the default on a; the default beats tuning on b; on c the difference is within noise",
        "scalarization": {"static_trials": [7], "pairs": pairs, "dominated": ["default", "dwa"], "not_dominated": []},
    }
    return Verdict.model_validate(verdict).model_dump()  # the API's own model: the stand-in keeps in step with it


def test_an_optimistic_verdict_warns_and_every_pair_of_tasks_is_drawn(page: Any, artifacts: Path) -> None:
    stub = StubApi(n_trials=2, epochs=1)
    for _ in range(4):
        stub.advance()  # both trials complete: the study settles
    stub.verdict = _optimistic_verdict()
    with serve(stub.app()) as base:
        page.goto(f"{base}/studies/live")
        page.wait_for_selector("#scalar-plot .main-svg")
        assert page.is_visible("#verdict-warning")
        assert page.inner_text("#verdict-title") == "Verdict on validation data (no held-out split)"
        assert "validation data" in page.inner_text("#verdict-warning")
        classes = [
            (page.locator(f'#verdict-table tr[data-task="{t}"] td').nth(5).get_attribute("class") or "").split()
            for t in "abc"
        ]
        assert ["better" in classes[0], "worse" in classes[1], "noise" in classes[2]] == [True, True, True]
        assert page.inner_text('#verdict-table tr[data-task="b"] td:nth-child(2)') == "accuracy ↑"
        assert page.inner_text("#dominance") == "tuned static weighting dominates: default, dwa; not dominated: none"

        assert page.is_visible("#pair-choice")
        assert page.locator("#pair-select option").all_inner_texts() == ["a vs b", "a vs c", "b vs c"]
        x_title = "document.querySelector('#scalar-plot .g-xtitle text').textContent"
        assert page.evaluate(x_title) == "a rmse ↓"
        page.select_option("#pair-select", "2")
        page.wait_for_function(f"{x_title} === 'b accuracy ↑'")
        symbols = page.evaluate(
            "document.getElementById('scalar-plot').data.filter((t) => t.mode === 'markers+text')"
            ".map((t) => [t.text[0], t.marker.symbol])"
        )
        assert symbols == [["default", "circle-open"], ["dwa", "circle-open"]]  # dominated: drawn hollow
        page.wait_for_timeout(300)  # let plotly finish its transitions before the picture
        page.locator("#verdict-card").screenshot(path=artifacts / "dashboard-verdict-optimistic.png")


def test_a_running_confirmation_is_followed_until_it_completes(page: Any) -> None:
    stub = StubApi(n_trials=1, epochs=1)
    stub.advance()
    stub.advance()  # the study settled; its confirmation runs
    assert stub.study.status == "completed"
    done = _optimistic_verdict()
    stub.verdict = done | {"status": "running", "runs": {"queued": 2, "running": 1, "complete": 6, "failed": 0}}
    page.clock.install()
    with serve(stub.app()) as base:
        page.goto(f"{base}/studies/live")
        page.wait_for_selector("#verdict-table tr[data-task]")
        assert page.inner_text("#verdict-status") == "running"
        progress = page.inner_text("#verdict-progress")
        assert progress == "Confirming on held-out data: 6 of 9 runs complete · 1 running · 2 queued (partial results)"
        assert page.is_visible("#live")  # polled though the study itself has settled

        stub.verdict = done
        page.clock.run_for(4100)  # one refresh period
        page.wait_for_function("document.querySelector('#verdict-status').textContent === 'complete'")
        page.wait_for_selector("#live", state="hidden")
        assert page.inner_text("#verdict-progress").startswith("9 of 9 runs complete")
