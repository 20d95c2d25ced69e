"""Small studies for the tests: tiny data, one in-process worker."""

from __future__ import annotations

from tuner.study import StudySpec, Worker, WorkerSettings, create_study

# Tiny data and one thread keep a study's trials at a fraction of a second.
TINY = {"n_train": 200, "n_val": 100}
#: Strategies whose steps cost about equal's: studies under test that do not test the space search these (the
#: default space also offers aggregators that solve a cvxpy problem every step).
QUICK_SPACE = {"strategy": ["equal", "static", "uncertainty", "uncertainty-positive", "gradnorm", "dwa"]}


def run_study(url: str, *, workers_trials: int | None = None, **spec_fields: object) -> str:
    """Create a study and run it to its target with one in-process worker."""
    fields: dict[str, object] = {
        "problem": "uncertainty-toy",
        "problem_options": dict(TINY),
        "epochs": 2,
        "space": QUICK_SPACE,
        "confirm_seeds": 0,  # confirmation runs are tested on their own (tests/study/test_confirmation.py)
    }
    fields.update(spec_fields)
    launched = create_study(url, StudySpec.model_validate(fields), source="cli")
    Worker(
        WorkerSettings(
            url=url, study_name=launched.study_name, exit_when_idle=True, max_trials=workers_trials, device="cpu"
        )
    ).run()
    return launched.study_name
