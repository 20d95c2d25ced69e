"""Importances as the API serves them: normalised, the largest first, and none at all (with a note saying why)
when no parameter stands out, instead of Optuna's equal shares that read as "all matter alike"."""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.distributions import FloatDistribution

from api.importance import normalised


def test_importances_sum_to_one_the_largest_first() -> None:
    importances, note = normalised({"a": 1.0, "b": 3.0, "c": 0.0})
    assert list(importances) == ["b", "a", "c"]
    assert importances["b"] == pytest.approx(0.75) and importances["a"] == pytest.approx(0.25)
    assert note is None


def test_when_no_parameter_stands_out_none_is_drawn() -> None:
    # Trials whose objective does not depend on their parameters: PED-ANOVA finds nothing in any of them.
    study = optuna.create_study()
    for i in range(8):
        params = {"a": 0.1 * i + 0.05, "b": (i * 7 % 8) / 8 + 0.01}
        distributions = {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = optuna.importance.PedAnovaImportanceEvaluator().evaluate(study)
    importances, note = normalised(raw)
    assert importances == {}
    assert note is not None and "no parameter stands out" in note
