"""The host solves of CAGrad and Nash-MTL and the vectorised GradDrop give torchjd's answers (tuner.weighting._solvers).

Tolerances. CAGrad: torchjd's CLARABEL solve is accurate to about 1e-9 in the objective, which leaves its weights
off by up to about 1e-4 of their sum where the problem is flat (conflicting or ill-conditioned gradients). Against
torchjd's own ``CAGradWeighting`` the fast weights are asserted to reach an objective no higher than torchjd's (to
1e-12, torchjd's solution brought into the simplex) and within 1e-8 of it, and weights within 1e-3 of the weights'
sum. Against torchjd's problem solved by CLARABEL at tolerances of 1e-13: an objective no higher (to 1e-13) and
weights within 5e-5 of the weights' sum (1e-6 except where sqrt_phi / ||R^T w|| is in the thousands, and there the
fast objective is the lower). Nash-MTL: alpha_i (G alpha)_i = 1 to 1e-8 (Newton stops at 1e-10, or at rounding on
ill-conditioned Gramians), no larger than torchjd's residual, and alpha within 1e-4 (relative) of torchjd's
wherever torchjd's own alpha meets the condition to 1e-5. GradDrop: bit for bit (values and signs of zeros).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchjd import aggregation as jd

from tuner.gradients import TaskGradients
from tuner.problems import Task
from tuner.weighting._aggregators import CAGrad, GradDrop, NashMTL
from tuner.weighting._solvers import (
    CAGradWeighting,
    NashMTLWeighting,
    cagrad_pair,
    cagrad_simplex,
    graddrop,
    nash_alpha,
)

KINDS = ("plain", "ill", "rankdef", "conflict", "scaled")


def _jacobian(n_tasks: int, kind: str, generator: torch.Generator, width: int = 30) -> Tensor:
    """A random Jacobian: Gaussian; ill-conditioned (singular values from 1 to 1e-4); of rank 2; with two tasks in
    near-opposition; with rows scaled from 1e-2 to 1e2."""
    matrix = torch.randn(n_tasks, width, generator=generator, dtype=torch.float64)
    if kind == "ill":
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        matrix = u @ torch.diag(torch.logspace(0, -4, s.shape[0], dtype=torch.float64)) @ vh
    elif kind == "rankdef":
        left = torch.randn(n_tasks, 2, generator=generator, dtype=torch.float64)
        matrix = left @ torch.randn(2, width, generator=generator, dtype=torch.float64)
    elif kind == "conflict":
        matrix[1] = -matrix[0] + 0.1 * matrix[1]
    elif kind == "scaled":
        matrix = matrix * torch.logspace(-2, 2, n_tasks, dtype=torch.float64).unsqueeze(1)
    return matrix


def _cases(seed: int, per_kind: int) -> Iterator[tuple[int, str, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    for n_tasks in (2, 3, 5, 10):
        for kind in KINDS:
            for _ in range(per_kind):
                yield n_tasks, kind, _jacobian(n_tasks, kind, generator)


# --- CAGrad ---------------------------------------------------------------------------------------------------


def _cagrad_problem(gramian: Tensor, c: float) -> tuple[np.ndarray, np.ndarray, float]:
    """torchjd's problem data: a, Q = R R^T and s for min over the simplex of a^T w + s sqrt(w^T Q w)."""
    n = gramian.shape[0]
    u, s, _ = torch.svd(gramian / gramian.diagonal().sum())
    reduced = (u @ s.sqrt().diag()).numpy()
    g_0 = reduced.T @ np.ones(n) / n
    return reduced @ g_0, reduced @ reduced.T, c * float(np.linalg.norm(g_0))


def _objective(a: np.ndarray, q: np.ndarray, s: float, w: np.ndarray) -> float:
    return float(a @ w + s * math.sqrt(max(float(w @ q @ w), 0.0)))


def _solution(weights: Tensor) -> np.ndarray:
    """w from torchjd's weights 1 / T + (sqrt_phi / ||R^T w||) w, brought into the simplex (CLARABEL's can be
    outside by 1e-10)."""
    shifted = np.clip(weights.numpy() - 1.0 / weights.shape[0], 0.0, None)
    return shifted / shifted.sum()


@pytest.mark.parametrize("c", [0.1, 0.4, 0.9])
def test_cagrad_matches_torchjd_s_weighting_on_random_gramians(c: float) -> None:
    solved = 0
    for n_tasks, kind, matrix in _cases(seed=int(c * 10), per_kind=3):
        gramian = matrix @ matrix.T
        fast = CAGradWeighting(c=c)
        ours = fast(gramian)
        reference = jd.CAGradWeighting(c=c)(gramian)
        assert ours.dtype == reference.dtype and ours.shape == (n_tasks,)
        scale = float(reference.sum())
        assert float((ours - reference).abs().max()) <= 1e-3 * scale, (n_tasks, kind)
        if fast.fallbacks:
            assert torch.equal(ours, reference)  # torchjd's own answer
            continue
        if not bool(reference.any()):  # the optimum's aggregate is below norm_eps: torchjd's zeros
            assert not bool(ours.any())
            continue
        solved += 1
        a, q, s = _cagrad_problem(gramian, c)
        mine, theirs = _objective(a, q, s, _solution(ours)), _objective(a, q, s, _solution(reference))
        assert mine <= theirs + 1e-12, (n_tasks, kind)
        assert theirs - mine <= 1e-8, (n_tasks, kind)
    assert solved >= 45  # most of the 60 cases on the fast path (rank 2 with T >= 3 may fall back; zeros aside)


def _tight_reference(gramian: Tensor, c: float) -> Tensor:
    """torchjd's CAGrad problem and weight formula, solved by CLARABEL with every tolerance at 1e-13."""
    import cvxpy as cp

    n = gramian.shape[0]
    u, s, _ = torch.svd(gramian / gramian.diagonal().sum())
    reduced = (u @ s.sqrt().diag()).numpy()
    g_0 = reduced.T @ np.ones(n) / n
    sqrt_phi = c * float(np.linalg.norm(g_0))
    w = cp.Variable(n)
    cost = (reduced @ g_0) @ w + sqrt_phi * cp.norm(reduced.T @ w, 2)
    problem = cp.Problem(cp.Minimize(cost), [w >= 0, cp.sum(w) == 1])
    problem.solve(cp.CLARABEL, tol_gap_abs=1e-13, tol_gap_rel=1e-13, tol_feas=1e-13, tol_ktratio=1e-10, max_iter=500)
    solution = np.asarray(w.value)
    norm = float(np.linalg.norm(reduced.T @ solution))
    weights = np.ones(n) / n + sqrt_phi / norm * solution if norm >= 1e-4 else np.zeros(n)
    return torch.from_numpy(weights)


def test_cagrad_matches_torchjd_s_problem_solved_to_a_tight_tolerance() -> None:
    generator = torch.Generator().manual_seed(11)
    for n_tasks in (2, 3, 5, 10):
        for kind in ("plain", "ill", "conflict", "scaled"):
            for _ in range(3):
                gramian = (lambda m: m @ m.T)(_jacobian(n_tasks, kind, generator))
                fast = CAGradWeighting(c=0.4)
                ours = fast(gramian)
                assert fast.fallbacks == 0, (n_tasks, kind)
                reference = _tight_reference(gramian, 0.4)
                scale = max(float(reference.sum()), 1.0)
                assert float((ours - reference).abs().max()) <= 5e-5 * scale, (n_tasks, kind)
                if bool(reference.any()):
                    a, q, s = _cagrad_problem(gramian, 0.4)
                    mine, theirs = _objective(a, q, s, _solution(ours)), _objective(a, q, s, _solution(reference))
                    assert mine <= theirs + 1e-13, (n_tasks, kind)


def test_cagrad_falls_back_to_torchjd_where_it_cannot_certify_its_answer() -> None:
    """Identical gradients (a singular Gramian on the optimum's face) and a zero Gramian (below norm_eps): torchjd's
    cvxpy solve answers, and its weights are returned."""
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    for matrix in (same, torch.zeros(2, 3, dtype=torch.float64)):
        gramian = matrix @ matrix.T
        fast = CAGradWeighting(c=0.4)
        ours = fast(gramian)
        assert fast.fallbacks == 1
        assert torch.equal(ours, jd.CAGradWeighting(c=0.4)(gramian))
    assert cagrad_simplex(np.array([0.5, 0.5]), np.eye(2), 0.0) is None  # c = 0 and a tie: no unique vertex


def test_cagrad_with_c_zero_is_the_average_without_torchjd() -> None:
    matrix = torch.tensor([[1.0, 0.0, 2.0], [-0.5, 1.0, 0.0], [0.3, 0.3, 0.3]], dtype=torch.float64)
    fast = CAGradWeighting(c=0.0)
    weights = fast(matrix @ matrix.T)
    assert fast.fallbacks == 0
    torch.testing.assert_close(weights, torch.full((3,), 1.0 / 3.0, dtype=torch.float64), rtol=0.0, atol=1e-15)


def test_cagrad_simplex_reaches_the_optimality_conditions_on_every_face() -> None:
    """KKT on the simplex, checked independently: where the minimum has weights at 0, their gradient is no smaller."""
    generator = np.random.default_rng(5)
    bounded = 0
    for n in (2, 3, 5, 10):
        for _ in range(40):
            factor = generator.normal(size=(n, 6)) * generator.uniform(0.1, 3.0, size=(n, 1))
            q = factor @ factor.T
            q /= np.trace(q)
            a = q.sum(axis=1) / n
            s = generator.uniform(0.05, 1.0) * math.sqrt(a.sum() / n)
            w = cagrad_simplex(a, q, s)
            if w is None:
                continue
            gradient = a + s * (q @ w) / math.sqrt(float(w @ q @ w))
            support = w > 0
            level = gradient[support].mean()
            assert (w >= 0).all() and abs(w.sum() - 1.0) <= 1e-12
            assert np.abs(gradient[support] - level).max() <= 1e-8
            assert (gradient[~support] >= level - 1e-8).all()
            bounded += int((~support).any())
    assert bounded >= 10  # the test reaches optima on lower faces


def test_cagrad_s_two_task_form_is_the_active_set_method_s_minimum() -> None:
    generator = np.random.default_rng(7)
    ends = 0
    for _ in range(200):
        factor = generator.normal(size=(2, 4)) * generator.uniform(0.01, 3.0, size=(2, 1))
        q = factor @ factor.T
        q /= np.trace(q)
        a = q.sum(axis=1) / 2
        s = generator.uniform(0.05, 1.0) * math.sqrt(a.sum() / 2)
        pair, general = cagrad_pair(a, q, s), cagrad_simplex(a, q, s)
        assert pair is not None and general is not None
        np.testing.assert_allclose(pair, general, rtol=0.0, atol=1e-9)
        ends += int(pair.min() == 0.0)
    assert ends >= 20  # both the interior and the vertex cases are reached
    assert cagrad_pair(np.array([0.5, 0.5]), np.full((2, 2), 0.5), 0.2) is None  # identical gradients: no segment


def test_the_cagrad_strategy_uses_the_fast_weighting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strategy's weights are the fast weighting's (times T) and never call cvxpy on a regular Gramian."""
    import cvxpy

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("cvxpy solved")

    for n_tasks in (2, 3):
        strategy = CAGrad([Task(f"t{i}", "regression") for i in range(n_tasks)], c=0.5)
        assert isinstance(strategy.weighting, CAGradWeighting)
        monkeypatch.setattr(cvxpy.Problem, "solve", refuse)
        matrix = torch.randn(n_tasks, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        weights, vector, _ = strategy.aggregate(TaskGradients(matrix, [nn.Parameter(torch.zeros(20))]))
        monkeypatch.undo()
        reference = jd.CAGradWeighting(c=0.5)(matrix @ matrix.T) * n_tasks
        torch.testing.assert_close(weights, reference, rtol=0.0, atol=1e-3 * float(reference.sum()))
        torch.testing.assert_close(vector, weights @ matrix)


# --- Nash-MTL -------------------------------------------------------------------------------------------------


def _residual(gramian: np.ndarray, alpha: np.ndarray) -> float:
    """max |alpha_i (G alpha)_i - 1|: 0 where G alpha = 1 / alpha."""
    return float(np.abs(alpha * (gramian @ alpha) - 1.0).max())


@pytest.mark.filterwarnings("ignore:.*(not DPP|may be inaccurate)")
def test_nash_mtl_solves_the_bargaining_condition_and_matches_torchjd_where_torchjd_converges() -> None:
    compared = 0
    for n_tasks, kind, matrix in _cases(seed=3, per_kind=2):
        if kind == "rankdef" and n_tasks > 2:
            continue  # rank 2 with more tasks: no solution (a positive null direction), tested below
        gramian = (matrix @ matrix.T).numpy()
        ours = NashMTLWeighting(n_tasks, max_norm=0.0, update_weights_every=1)
        alpha = ours(torch.from_numpy(gramian)).numpy()
        assert ours.fallbacks == 0, (n_tasks, kind)
        assert _residual(gramian, alpha) <= 1e-8, (n_tasks, kind)
        reference = jd.NashMTL(n_tasks=n_tasks, max_norm=0.0).weighting(matrix).numpy()
        # torchjd stops at ||G_n alpha - 1/alpha|| < 1e-3 (G_n = G / ||G||_F), on a change below 1e-6 or after 20
        # solves: where its alpha meets the condition it is the same alpha.
        assert _residual(gramian, alpha) <= _residual(gramian, reference)
        if _residual(gramian, reference) <= 1e-5:
            compared += 1
            np.testing.assert_allclose(alpha, reference, rtol=1e-4, atol=0.0)
    assert compared >= 20


@pytest.mark.filterwarnings("ignore:.*(not DPP|may be inaccurate)")
def test_nash_mtl_caps_the_norm_and_keeps_alpha_between_updates_as_torchjd_does() -> None:
    generator = torch.Generator().manual_seed(8)
    matrices = [torch.randn(3, 25, generator=generator, dtype=torch.float64) * (1 + k) for k in range(7)]
    for max_norm, every in ((1.0, 1), (0.5, 3), (0.0, 2)):
        ours = NashMTLWeighting(3, max_norm=max_norm, update_weights_every=every)
        reference = jd.NashMTL(n_tasks=3, max_norm=max_norm, update_weights_every=every)
        for matrix in matrices:
            weights = ours(matrix @ matrix.T)
            expected = reference.weighting(matrix)
            torch.testing.assert_close(weights, expected.to(weights.dtype), rtol=1e-4, atol=0.0)
            if max_norm > 0:
                assert float(torch.linalg.vector_norm(weights @ matrix)) <= max_norm * (1 + 1e-12)


@pytest.mark.filterwarnings("ignore:.*(not DPP|may be inaccurate)")
def test_nash_mtl_falls_back_to_torchjd_where_no_alpha_exists() -> None:
    """A task without gradient, and two opposite gradients (alpha = (1, 1) has G alpha = 0): Newton does not
    converge; the step is torchjd's, from its initial state; the next regular step is solved again."""
    zero = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    opposite = torch.tensor([[1.0, 2.0, 0.5], [-1.0, -2.0, -0.5]], dtype=torch.float64)
    for matrix in (zero, opposite):
        gramian = (matrix @ matrix.T).numpy()
        assert nash_alpha(gramian / np.linalg.norm(gramian), np.ones(2)) is None
        ours = NashMTLWeighting(2, max_norm=0.0, update_weights_every=1)
        weights = ours(torch.from_numpy(gramian))
        assert ours.fallbacks == 1
        torch.testing.assert_close(weights, jd.NashMTL(n_tasks=2, max_norm=0.0).weighting(matrix))
        regular = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0]], dtype=torch.float64)
        alpha = ours(regular @ regular.T).numpy()
        assert ours.fallbacks == 1 and _residual((regular @ regular.T).numpy(), alpha) <= 1e-9


@pytest.mark.parametrize("n_tasks", [1, 2, 3])
def test_nash_mtl_keeps_its_last_alpha_where_no_task_has_a_gradient(n_tasks: int) -> None:
    """A zero Gramian: every alpha gives the same (zero) aggregate, and torchjd's solve fails on it; the step keeps
    the last alpha and the next one is solved as before."""
    ours = NashMTLWeighting(n_tasks, max_norm=0.0, update_weights_every=1)
    regular = torch.eye(n_tasks, dtype=torch.float64) * 2.0
    before = ours(regular)
    kept = ours(torch.zeros(n_tasks, n_tasks, dtype=torch.float64))
    torch.testing.assert_close(kept, before)
    assert ours.fallbacks == 0
    torch.testing.assert_close(ours(regular), before)


def test_nash_alpha_is_warm_started_and_needs_few_newton_steps_from_the_last_alpha() -> None:
    generator = np.random.default_rng(1)
    factor = generator.normal(size=(5, 8))
    gramian = factor @ factor.T
    gramian /= np.linalg.norm(gramian)
    alpha = nash_alpha(gramian, np.ones(5))
    assert alpha is not None and _residual(gramian, alpha) <= 1e-10
    again = nash_alpha(gramian, alpha)
    assert again is not None and np.array_equal(again, alpha)  # already converged: no step taken
    assert nash_alpha(gramian, -np.ones(5)) is None  # a start outside alpha > 0 is refused


@pytest.mark.filterwarnings("ignore:.*(not DPP|may be inaccurate)")
def test_the_nash_mtl_strategy_matches_torchjd_on_the_jacobian() -> None:
    matrix = torch.randn(4, 30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    strategy = NashMTL([Task(f"t{i}", "regression") for i in range(4)], max_norm=2.0)
    weights, vector, _ = strategy.aggregate(TaskGradients(matrix, [nn.Parameter(torch.zeros(30))]))
    reference = jd.NashMTL(n_tasks=4, max_norm=2.0).weighting(matrix)
    torch.testing.assert_close(weights, reference, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(vector, weights @ matrix)


# --- GradDrop -------------------------------------------------------------------------------------------------


def _bitwise_equal(a: Tensor, b: Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("leak", [None, 0.0, 0.3, 1.0])
def test_graddrop_is_torchjd_s_bit_for_bit(dtype: torch.dtype, n_tasks: int, leak: float | None) -> None:
    """Same generator state, same vector, same draws consumed; columns of zeros (P is NaN there), of -0.0, and of
    gradients that all agree in sign included."""
    for seed in range(3):
        matrix = torch.randn(n_tasks, 3000, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        matrix[:, :40] = 0.0
        matrix[0, 40:80] = -0.0
        matrix[:, 80:160] = matrix[:, 80:160].abs()
        matrix[:, 160:240] = -matrix[:, 160:240].abs()
        leaks = None if leak is None else torch.full((n_tasks,), leak)
        torch.manual_seed(seed)
        expected = jd.GradDrop(leak=leaks)(matrix)
        after_expected = torch.rand(4)
        torch.manual_seed(seed)
        vector = graddrop(matrix, leaks)
        assert _bitwise_equal(vector, expected)
        assert torch.equal(torch.rand(4), after_expected)


def test_the_graddrop_strategy_is_torchjd_s_graddrop() -> None:
    matrix = torch.randn(3, 500, generator=torch.Generator().manual_seed(6))
    for leak in (0.0, 0.25):
        strategy = GradDrop([Task(f"t{i}", "regression") for i in range(3)], leak=leak)
        torch.manual_seed(9)
        weights, vector, _ = strategy.aggregate(TaskGradients(matrix, [nn.Parameter(torch.zeros(500))]))
        torch.manual_seed(9)
        expected = jd.GradDrop(leak=torch.full((3,), leak) if leak else None)(matrix)
        assert _bitwise_equal(vector, expected)
        assert torch.equal(weights, torch.ones(3))


def test_graddrop_checks_its_leak_and_handles_empty_matrices() -> None:
    assert graddrop(torch.zeros(2, 0)).shape == (0,)
    with pytest.raises(ValueError, match="leak"):
        graddrop(torch.ones(3, 4), torch.zeros(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graddrop(torch.zeros(3, 4))  # 0 / 0 purity: no warning, the zero vector
    assert _bitwise_equal(graddrop(torch.zeros(3, 4)), torch.zeros(4))
