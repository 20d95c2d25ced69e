"""An in-memory stand-in for the REST API's read routes, to drive the dashboard's refresh logic in a browser.

It follows the contract the pages consume (see ``api/schemas.py``) with made-up numbers; ``advance()`` makes the
running study move on by one epoch, so a test can watch a page fetch only what is new.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException

from api.routers import pages

TASKS = [
    {"name": "y1", "kind": "regression", "metric": "mse", "direction": "minimize"},
    {"name": "y2", "kind": "regression", "metric": "mse", "direction": "minimize"},
]
STRATEGIES = ("equal", "static", "uncertainty", "gradnorm", "dwa")


def _series(strategy: str, i: int, decay: float) -> dict[str, float]:
    """The series a strategy reports besides the weight, as the API serves them; ``conflicts`` stands for a
    strategy of a user's own whose series no dashboard code knows."""
    if strategy == "uncertainty":
        return {"sigma": (1 + 9 * (1 - i)) * (1 - decay) + 1}
    if strategy == "gradnorm":
        return {"grad_norm": 0.5 + decay, "grad_norm_target": 0.5 + decay / 2}
    if strategy == "conflicts":
        return {"cosine": (-1) ** i * decay}
    return {}


def _trial(number: int, epochs: int, rng: random.Random, strategy: str | None = None) -> dict[str, Any]:
    strategy = "equal" if number == 0 else strategy or rng.choice(STRATEGIES)
    params: dict[str, Any] = {} if number == 0 else {"strategy": strategy, "lr_shared": 10 ** rng.uniform(-4, -1)}
    if strategy == "static":
        params["weight_y1"] = rng.uniform(0.1, 1)
    rows = []
    for epoch in range(1, epochs + 1):
        decay = math.exp(-epoch / 3)
        rows.append(
            {
                "epoch": epoch,
                "tasks": {
                    t["name"]: {
                        "train_loss": (i + 1) * (1 + 4 * decay) + rng.random() * 0.1,
                        "val_loss": (i + 1) * (1.1 + 4 * decay) + rng.random() * 0.1,
                        "metric": (i + 1) * (1.1 + 4 * decay),
                        "weight": 1.0 + 0.2 * i * decay,
                        "sigma": series.get("sigma"),
                        "grad_norm": series.get("grad_norm"),
                        "series": series,
                    }
                    for i, t in enumerate(TASKS)
                    for series in [_series(strategy, i, decay)]
                },
            }
        )
    last = rows[-1]["tasks"]
    objective = 0.5 + rng.random() * 0.4
    return {
        "number": number,
        "state": "complete",
        "values": [objective],
        "objective": objective,
        "params": params,
        "tasks": {
            k: {key: v[key] for key in ("val_loss", "metric", "weight", "sigma", "series")} for k, v in last.items()
        },
        "duration_s": 1.0 + number % 3,
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:02Z",
        "baseline": number == 0,
        "config": {"strategy": strategy, "lr": params.get("lr_shared", 0.01)},
        "fail_reason": None,
        "epochs": rows,
    }


@dataclass
class FakeStudy:
    name: str
    n_trials: int
    epochs: int
    status: str
    trials: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        counts = {s: sum(t["state"] == s for t in self.trials) for s in ("complete", "pruned", "failed", "running")}
        done = [t["objective"] for t in self.trials if t["state"] == "complete"]
        return {
            "name": self.name,
            "problem": "uncertainty-toy",
            "problem_options": {},
            "objective": "scalar",
            "directions": ["minimize"],
            "status": self.status,
            "sampler": "random",
            "pruner": "none",
            "epochs": self.epochs,
            "n_trials": self.n_trials,
            "trials": counts,
            "best_value": min(done) if done else None,
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "last_error": None,
        }

    def row(self, trial: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in trial.items() if k not in ("config", "fail_reason", "epochs")}


def not_requested(name: str) -> dict[str, Any]:
    """The verdict of a study whose confirmation nobody asked for (``GET /studies/{name}/verdict``)."""
    return {
        "study": name,
        "objective": "scalar",
        "status": "not requested",
        "runs": {"queued": 0, "running": 0, "complete": 0, "failed": 0},
        "seeds": [],
        "split": None,
        "optimistic": False,
        "provisional": False,
        "interval": "95 % paired t interval of the per-seed differences to the baseline",
        "tasks": TASKS,
        "candidates": [],
        "judgements": {},
        "sentence": "",
        "scalarization": None,
    }


class StubApi:
    """One running study whose current trial gains an epoch, or finishes, at each ``advance()``; ``strategy``
    names the strategy of every trial after the baseline (drawn at random when None). ``verdict`` is what
    ``GET .../verdict`` serves (not requested unless a test sets another)."""

    def __init__(self, *, n_trials: int = 6, epochs: int = 3, strategy: str | None = None) -> None:
        self.rng = random.Random(0)
        self.strategy = strategy
        self.study = FakeStudy("live", n_trials, epochs, "running")
        self.requests: list[str] = []
        self.verdict: dict[str, Any] = not_requested(self.study.name)
        self._start_trial()

    def _start_trial(self) -> None:
        trial = _trial(len(self.study.trials), self.study.epochs, self.rng, self.strategy)
        self._pending = trial["epochs"]
        trial.update(state="running", values=None, objective=None, epochs=[], tasks={})
        self.study.trials.append(trial)

    def advance(self) -> None:
        trial = self.study.trials[-1]
        if self._pending:
            trial["epochs"].append(self._pending.pop(0))
            return
        done = _trial(trial["number"], self.study.epochs, random.Random(trial["number"]), self.strategy)
        trial.update({k: v for k, v in done.items() if k != "epochs"})
        if len(self.study.trials) < self.study.n_trials:
            self._start_trial()
        else:
            self.study.status = "completed"

    def detail(self) -> dict[str, Any]:
        done = [t for t in self.study.trials if t["state"] == "complete"]
        best = [self.study.row(min(done, key=lambda t: t["objective"]))] if done else []
        return self.study.summary() | {"space": {}, "tasks": TASKS, "best": best, "baseline": None, "comparison": {}}

    def app(self) -> FastAPI:
        app = FastAPI()
        router = APIRouter(prefix="/api")
        study = self.study

        def find(name: str) -> FakeStudy:
            if name != study.name:
                raise HTTPException(404, f"no study named {name!r}")
            return study

        @router.get("/problems")
        def problems() -> dict[str, Any]:
            return {
                "problems": [
                    {
                        "name": "uncertainty-toy",
                        "description": "two regressions",
                        "tasks": TASKS,
                        "tasks_declared_by_options": False,
                        "model_knobs": {
                            "hidden": {
                                "default": 64,
                                "low": None,
                                "high": None,
                                "log": False,
                                "choices": None,
                                "help": "width",
                            }
                        },
                        "default_space": {"strategy": ["equal", "uncertainty"]},
                        "options": {"properties": {"n_train": {"type": "integer", "default": 1000}}},
                    }
                ],
                "broken": [],
            }

        @router.get("/studies")
        def studies() -> dict[str, Any]:
            return {"studies": [study.summary()]}

        @router.get("/studies/{name}")
        def detail(name: str) -> dict[str, Any]:
            find(name)
            return self.detail()

        @router.get("/studies/{name}/history")
        def history(name: str, after: int = -1) -> dict[str, Any]:
            self.requests.append(f"history?after={after}")
            rows = [t for t in find(name).trials if t["number"] > after]
            return {"items": [{k: t[k] for k in ("number", "state", "objective", "values")} for t in rows]}

        @router.get("/studies/{name}/trials")
        def trials(name: str, state: str = "", order: str = "number", limit: int = 50, offset: int = 0) -> Any:
            rows = [find(name).row(t) for t in study.trials if not state or t["state"] == state]
            return {"total": len(rows), "limit": limit, "offset": offset, "items": rows[offset : offset + limit]}

        @router.get("/studies/{name}/trials/{number}")
        def trial(name: str, number: int, after_epoch: int = 0) -> dict[str, Any]:
            self.requests.append(f"trial/{number}?after_epoch={after_epoch}")
            t = find(name).trials[number]
            return t | {"epochs": [e for e in t["epochs"] if e["epoch"] > after_epoch]}

        @router.get("/studies/{name}/verdict")
        def verdict(name: str) -> dict[str, Any]:
            find(name)
            return self.verdict

        @router.get("/studies/{name}/importance")
        def importance(name: str) -> dict[str, Any]:
            find(name)
            return {
                "status": "ready",
                "importances": {"strategy": 0.7, "lr_shared": 0.3},
                "computed_at": None,
                "n_trials": 1,
                "stale": False,
            }

        app.include_router(router)
        app.include_router(pages.router)
        return app
