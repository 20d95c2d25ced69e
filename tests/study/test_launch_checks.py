"""Launch checks: the operator's limits, task names the database can hold, and a refused launch writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

import storage
from tuner.limits import LimitError, Limits
from tuner.problems import ProblemError
from tuner.study import StudySpec, create_or_resume, create_study, validate
from tuner.study._checks import task_name_length


def refused(limits: Limits | None = None, **fields: Any) -> LimitError:
    with pytest.raises(LimitError) as err:
        validate(StudySpec.model_validate({"problem": "gradnorm-toy", **fields}), limits)
    return err.value


@pytest.mark.parametrize(
    ("fields", "loc", "variable"),
    [
        ({"problem_options": {"n_train": 3_000_000}}, ("problem_options", "n_train"), "MTL_TUNE_MAX_SAMPLES"),
        ({"problem_options": {"n_test": 3_000_000}}, ("problem_options", "n_test"), "MTL_TUNE_MAX_SAMPLES"),
        ({"n_trials": 50_000}, ("n_trials",), "MTL_TUNE_MAX_TRIALS"),
        ({"epochs": 5_000}, ("epochs",), "MTL_TUNE_MAX_EPOCHS"),
        ({"space": {"batch_size": [32, 100_000]}}, ("space", "batch_size"), "MTL_TUNE_MAX_BATCH_SIZE"),
        ({"space": {"model": {"hidden": {"low": 8, "high": 1e6}}}}, ("space", "model", "hidden"), "MTL_TUNE_MAX_WIDTH"),
        ({"space": {"model": {"depth": [2, 400]}}}, ("space", "model", "depth"), "MTL_TUNE_MAX_DEPTH"),
        ({"space": {"model": {"depth": 400}}}, ("space", "model", "depth"), "MTL_TUNE_MAX_DEPTH"),
    ],
)
def test_requests_over_the_default_limits_are_refused_naming_the_field(
    fields: dict[str, Any], loc: tuple[str, ...], variable: str
) -> None:
    err = refused(**fields)
    assert err.loc == loc
    assert variable in str(err) and ".".join(loc) in str(err)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    validate(StudySpec(problem="gradnorm-toy", problem_options={"n_train": 500}))
    monkeypatch.setenv("MTL_TUNE_MAX_SAMPLES", "400")
    assert refused(problem_options={"n_train": 500}).loc == ("problem_options", "n_train")
    monkeypatch.setenv("MTL_TUNE_MAX_WIDTH", "50")  # below gradnorm-toy's default width: its baseline would exceed it
    small = {"n_train": 100, "n_val": 100, "n_test": 100}
    assert refused(problem_options=small).loc == ("space", "model", "hidden")


def test_a_limit_that_is_not_a_count_is_refused_naming_its_variable() -> None:
    with pytest.raises(ValueError, match="MTL_TUNE_MAX_EPOCHS"):
        Limits.from_env({"MTL_TUNE_MAX_EPOCHS": "lots"})
    with pytest.raises(ValueError, match="MTL_TUNE_MAX_SAMPLES"):
        Limits.from_env({"MTL_TUNE_MAX_SAMPLES": "-3"})
    assert Limits.from_env({"MTL_TUNE_MAX_TRIAL_SECONDS": "60"}).trial_seconds == 60


def test_a_problems_own_knob_maximum_is_kept() -> None:
    with pytest.raises(LimitError, match="maximum of 6 for problem 'multi-digits'") as err:
        validate(StudySpec(problem="multi-digits", space={"model": {"depth": [2, 9]}}))
    assert err.value.loc == ("space", "model", "depth")


def _csv(path: Path, target: str) -> Path:
    path.write_text(f"x,{target}\n" + "".join(f"{i},{i % 7}\n" for i in range(40)))
    return path


def test_task_names_longer_than_the_database_keeps_are_refused_on_every_backend(tmp_path: Path) -> None:
    longest = task_name_length()
    assert longest == 128
    fits = _csv(tmp_path / "fits.csv", "y" * longest)
    validate(StudySpec(problem="csv", problem_options={"data": str(fits), "target": [f"{'y' * longest}:regression"]}))
    long = _csv(tmp_path / "long.csv", "y" * (longest + 1))
    with pytest.raises(LimitError, match="129 characters; at most 128") as err:
        validate(
            StudySpec(
                problem="csv", problem_options={"data": str(long), "target": [f"{'y' * (longest + 1)}:regression"]}
            )
        )
    assert err.value.loc == ("problem_options", "target")


def test_a_refused_launch_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'refused.db'}"
    bad = {"data": str(_csv(tmp_path / "t.csv", "y")), "target": ["nope:regression"]}
    with pytest.raises(ProblemError, match="nope"):
        create_study(url, StudySpec(name="s", problem="csv", problem_options=bad), source="cli")
    with pytest.raises(LimitError):
        create_study(url, StudySpec(name="s", problem="gradnorm-toy", n_trials=10**5), source="cli")
    assert not (tmp_path / "refused.db").exists()  # not even the schema: everything was checked first

    good = {**bad, "target": ["y:regression"]}
    assert create_study(url, StudySpec(name="s", problem="csv", problem_options=good), source="cli").created


def _spec(**fields: Any) -> StudySpec:
    base = {"name": "again", "problem": "uncertainty-toy", "problem_options": {"n_train": 100}, "epochs": 2}
    return StudySpec.model_validate({**base, **fields})


def test_running_a_study_again_with_other_settings_is_refused_naming_each(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.db'}"
    create_or_resume(url, _spec(), source="cli")
    assert not create_or_resume(url, _spec(n_trials=30), source="cli").created  # more trials, same settings

    changed = _spec(epochs=3, sampler="random", problem_options={"n_train": 200}, space={"lr_shared": 0.01})
    with pytest.raises(ValueError, match="--resume") as err:
        create_or_resume(url, changed, source="cli")
    message = str(err.value)
    for part in (
        "epochs: 2 (requested: 3)",
        "sampler: tpe (requested: random)",
        "problem_options.n_train",
        "space.lr_shared",
    ):
        assert part in message
    assert "seed" not in message and "objective" not in message
    with pytest.raises(ValueError, match="problem: uncertainty-toy \\(requested: gradnorm-toy\\)"):
        create_or_resume(url, _spec(problem="gradnorm-toy", problem_options={}), source="cli")

    resumed = create_or_resume(url, changed.model_copy(update={"n_trials": 40}), source="cli", resume=True)
    assert (resumed.created, resumed.n_trials) == (False, 40)
    with storage.session_scope(url) as session:
        job = storage.get_job(session, "again")
        assert (job.epochs, job.sampler, job.problem_options) == (2, "tpe", {"n_train": 100})  # as stored
    with pytest.raises(LimitError, match="MTL_TUNE_MAX_TRIALS"):
        create_or_resume(url, changed.model_copy(update={"n_trials": 10**5}), source="cli", resume=True)
    with pytest.raises(ValueError, match="no study 'other' to resume"):
        create_or_resume(url, _spec(name="other"), source="cli", resume=True)
    assert optuna.get_all_study_names(storage.optuna_storage(url)) == ["again"]
