"""Fast host solves of torchjd's CAGrad and Nash-MTL weightings, and a vectorised GradDrop.

torchjd defines each method; these compute the same thing faster and hand back to torchjd where they cannot certify
their answer.

CAGrad. torchjd's ``CAGradWeighting`` normalises the Gramian by its trace, factors it as R R^T (``torch.svd``) and
solves, with cvxpy (CLARABEL), min over the simplex of a^T w + s ||R^T w|| (a = R R^T 1/T, s = c ||R^T 1/T||): 15 to
25 ms a step, a new problem every time. ``CAGradWeighting`` here builds the same problem (the same normalisation;
Q = R R^T from the eigendecomposition, equal to torchjd's to rounding) and solves it on the host: for two tasks in
closed form on the segment (``cagrad_pair``), otherwise by a primal active-set method over the simplex's faces
(``cagrad_simplex``), where on a face the stationary point of a + s Q w / ||R^T w|| = lambda 1 has a closed form
(one solve with Q's block and a quadratic in lambda), or the objective decreases without bound on the face's affine
hull along a known direction. An answer is accepted only where it satisfies the problem's optimality (KKT)
conditions on the simplex to ``KKT_TOL``; otherwise (a singular Q on the optimum's face, c = 0 with ties, an optimum
where R^T w = 0, a Gramian below norm_eps) that step is torchjd's own cvxpy solve. torchjd's formula turns w into
the weights, unchanged. Both solve the same problem; CLARABEL's answer is accurate to about 1e-9 in the objective
(and 1e-4 of the weights' sum where the problem is flat), the active-set one to rounding.

Nash-MTL. torchjd's ``NashMTL`` solves the bargaining condition G alpha = 1 / alpha (G the Gramian; torchjd hands
cvxpy G / ||G||_F and the factor ||G||_F separately, which cancel) by up to 20 convex ECOS problems a step, warm
started from the last alpha. Here it is the minimum of the strictly convex 1/2 alpha^T G alpha - sum(log alpha),
by (damped) Newton steps on G / ||G||_F (then alpha / sqrt(||G||_F)), warm started alike, a few microseconds
each. A minimum exists unless
some alpha >= 0, alpha != 0, has G alpha = 0 (a task with no gradient, gradients whose convex hull holds 0); there
Newton does not converge, and the step is torchjd's ``NashMTL`` (see ``NashMTLWeighting``).

GradDrop. torchjd's ``GradDrop`` loops over the tasks with about ten vector operations each; ``graddrop`` computes
the same purity P, draws U the same way (one ``torch.rand`` of P's shape, dtype and device) and gives the same
vector, bit for bit, with a few whole-matrix operations.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torchjd import aggregation as jd
from torchjd.linalg import PSDMatrix

Array = npt.NDArray[np.float64]

#: Tolerance on CAGrad's optimality conditions (stationarity on the face, the bounds' multipliers, the simplex), in
#: the units of the trace-normalised problem, where every entry of Q is at most 1.
KKT_TOL = 1e-9
#: Newton stops when every alpha_i (G alpha)_i is within this of 1...
NASH_TOL = 1e-10
#: ... or when rounding leaves nothing to gain (Newton decrement lambda^2 below ``NASH_FLAT``: an ill-conditioned
#: Gramian) and every alpha_i (G alpha)_i is within ``NASH_ACCEPT`` of 1.
NASH_FLAT = 1e-18
NASH_ACCEPT = 1e-6
NASH_MAX_ITER = 60


# --- CAGrad ---------------------------------------------------------------------------------------------------


class CAGradWeighting(jd.CAGradWeighting):
    """torchjd's ``CAGradWeighting`` (same problem, same weights) with the simplex problem solved on the host by an
    active-set method in numpy, checked by its optimality conditions; torchjd's cvxpy solve where the check fails.

    ``fallbacks`` counts the steps torchjd solved."""

    def __init__(self, c: float, norm_eps: float = 0.0001) -> None:
        super().__init__(c=c, norm_eps=norm_eps)
        self.fallbacks = 0

    def forward(self, gramian: PSDMatrix, /) -> Tensor:
        dimension = gramian.shape[0]
        g = gramian.detach().cpu().numpy().astype(np.float64)
        trace = float(np.trace(g))
        if not (math.isfinite(trace) and trace >= self.norm_eps and np.isfinite(g).all()):
            self.fallbacks += 1  # torchjd's zero Gramian (below norm_eps), or nothing to solve
            return super().forward(gramian)
        # torchjd's problem: R = U sqrt(S) from the SVD of G / trace(G), a = R R^T 1 / T, s = c ||R^T 1 / T||.
        # R R^T = V |Lambda| V^T from the eigendecomposition (the SVD's singular values are |eigenvalues|): the
        # normalised Gramian itself where it is positive semi-definite (for two tasks: a determinant >= 0).
        q = g / trace
        if dimension != 2 or q[0, 0] * q[1, 1] - q[0, 1] * q[1, 0] < 0.0:
            eigenvalues, vectors = np.linalg.eigh(q)
            q = (vectors * np.abs(eigenvalues)) @ vectors.T
        a = q.sum(axis=1) / dimension
        sqrt_phi = self.c * math.sqrt(max(float(a.sum()) / dimension, 0.0))
        w = cagrad_pair(a, q, sqrt_phi) if dimension == 2 else cagrad_simplex(a, q, sqrt_phi)
        if w is None:
            self.fallbacks += 1
            return super().forward(gramian)
        # torchjd's weights from w: 1 / T + (sqrt_phi / ||R^T w||) w, zeros where ||R^T w|| < norm_eps.
        g_w_norm = math.sqrt(max(float(w @ q @ w), 0.0))
        if g_w_norm >= self.norm_eps:
            weight_array = np.ones(dimension) / dimension
            weight_array += (sqrt_phi / g_w_norm) * w
        else:
            weight_array = np.zeros(dimension)
        return torch.from_numpy(weight_array).to(device=gramian.device, dtype=gramian.dtype)


def cagrad_pair(a: Array, q: Array, s: float) -> Array | None:
    """``cagrad_simplex`` for two tasks: w = (t, 1 - t), the minimum of the convex f(t) = a^T w + s sqrt(N(t)) on
    [0, 1], N(t) = c0 + 2 c1 t + c2 t^2 = w^T Q w. With u = c1 + c2 t, N = (u^2 + D) / c2 (D = c0 c2 - c1^2 >= 0)
    and f'(t) = delta + s u sqrt(c2) / sqrt(u^2 + D) (delta = a_1 - a_2) is 0 at u = rho sqrt(D / (c2 - rho^2)),
    rho = -delta / s, where rho^2 < c2; the minimum is there or at an end. Checked by the KKT conditions on [0, 1];
    None where Q d = 0 along the segment (c2 ~ 0), s = 0, or the check fails."""
    q11, q12, q22 = float(q[0, 0]), float(q[0, 1]), float(q[1, 1])
    c0, c1, c2 = q22, q12 - q22, q11 - 2.0 * q12 + q22
    delta = float(a[0]) - float(a[1])
    if not (s > 0.0 and c2 > 1e-12 and math.isfinite(c0 + c1 + c2 + delta + s)):
        return None

    def squared(t: float) -> float:
        return c0 + (2.0 * c1 + c2 * t) * t

    def value(t: float) -> float:
        return delta * t + s * math.sqrt(max(squared(t), 0.0))

    candidates = [0.0, 1.0]
    rho = -delta / s
    if rho * rho < c2:
        u = math.copysign(abs(rho) * math.sqrt(max(c0 * c2 - c1 * c1, 0.0) / (c2 - rho * rho)), rho)
        t = (u - c1) / c2
        if 0.0 < t < 1.0:
            candidates.append(t)
    best = min(candidates, key=value)
    norm = squared(best)
    if not norm > 0.0:
        return None
    slope = delta + s * (c1 + c2 * best) / math.sqrt(norm)
    if not (slope >= -KKT_TOL if best == 0.0 else slope <= KKT_TOL if best == 1.0 else abs(slope) <= KKT_TOL):
        return None
    return np.array([best, 1.0 - best])


def cagrad_simplex(a: Array, q: Array, s: float) -> Array | None:
    """The minimum over the simplex of a^T w + s sqrt(w^T Q w) (Q positive semi-definite), or None where it cannot
    be found and certified: by a primal active-set method whose every face problem has a closed form
    (``_cagrad_face``), the answer checked by the problem's optimality (KKT) conditions to ``KKT_TOL``."""
    n = a.shape[0]
    if not (np.isfinite(a).all() and np.isfinite(q).all() and math.isfinite(s)):
        return None
    if s <= 0.0:  # linear: a vertex, where the minimum is unique
        best = int(np.argmin(a))
        if np.count_nonzero(a <= a[best] + KKT_TOL) != 1:
            return None
        return np.eye(n)[best]
    active = np.ones(n, dtype=bool)
    w = np.full(n, 1.0 / n)
    for _ in range(4 * n + 4):
        face = _cagrad_face(a, q, s, active)
        if face is None:
            return None
        target, bounded = face
        if bounded and target.min() >= 0.0:
            verdict = _cagrad_kkt(a, q, s, target, active)
            if verdict is None:
                return target
            if verdict < 0:
                return None
            active[verdict] = True  # its bound's multiplier is negative: it joins the face
            w = target
            continue
        # Move towards the face's minimum (or along the ray on which the objective keeps decreasing) until a weight
        # reaches 0; that weight leaves the face.
        move = target - w if bounded else target
        blocking = active & (move < 0.0)
        if not blocking.any():
            return None
        ratios = np.where(blocking, w / np.where(blocking, -move, 1.0), np.inf)
        step = float(ratios.min())
        w = np.maximum(w + step * move, 0.0)
        active &= ~(blocking & (ratios <= step))
        if not active.any():
            return None
        w = np.where(active, w, 0.0)
        w /= w.sum()
    return None


def _cagrad_face(a: Array, q: Array, s: float, active: npt.NDArray[np.bool_]) -> tuple[Array, bool] | None:
    """The minimum of a^T w + s sqrt(w^T Q w) on the face's affine hull {sum(w) = 1, w_i = 0 off the face}, and
    True; or, where it has none, a direction (summing to 0) along which the objective decreases without bound, and
    False; None where Q_SS is singular.

    With H = Q_SS^-1, alpha = 1^T H 1, beta = 1^T H a, gamma = a^T H a, the stationary points satisfy
    a + s Q w / ||R^T w|| = lambda 1: w = (lambda H 1 - H a) / k with lambda the larger root of
    alpha l^2 - 2 beta l + gamma - s^2 = 0 and k = sqrt of its discriminant beta^2 - alpha (gamma - s^2). Where
    that is not positive, m = (beta / alpha) H 1 - H a has a^T m = -m^T Q m and m^T Q m >= s^2: the objective's
    slope along m is at most sqrt(m^T Q m) (s - sqrt(m^T Q m)) <= 0 everywhere (it is convex along the line)."""
    whole = bool(active.all())
    a_s = a if whole else a[active]
    q_s = q if whole else q[np.ix_(active, active)]
    rhs = np.empty((a_s.shape[0], 2))
    rhs[:, 0] = 1.0
    rhs[:, 1] = a_s
    try:
        solved = np.linalg.solve(q_s, rhs)
    except np.linalg.LinAlgError:
        return None
    h1, ha = solved[:, 0], solved[:, 1]
    alpha, beta, gamma = float(h1.sum()), float(ha.sum()), float(a_s @ ha)
    if not (math.isfinite(alpha + beta + gamma) and alpha > 0.0):
        return None
    discriminant = beta * beta - alpha * (gamma - s * s)
    if discriminant > 0.0:
        k = math.sqrt(discriminant)
        face = ((beta + k) / alpha * h1 - ha) / k
        bounded = True
    else:
        face = (beta / alpha) * h1 - ha
        bounded = False
    if whole:
        return face, bounded
    out = np.zeros(a.shape[0])
    out[active] = face
    return out, bounded


def _cagrad_kkt(a: Array, q: Array, s: float, w: Array, active: npt.NDArray[np.bool_]) -> int | None:
    """The KKT conditions of the problem on the simplex at w (>= 0, a face's minimum, 0 off ``active``), to
    ``KKT_TOL``: None where they hold (w sums to 1, the gradient a + s Q w / sqrt(w^T Q w) is equal on the face and
    no smaller off it); the index off the face with the most negative multiplier where only that fails; -1
    otherwise."""
    qw = q @ w
    squared = float(w @ qw)
    if not (squared > 0.0 and abs(float(w.sum()) - 1.0) <= KKT_TOL):
        return -1
    gradient = a + (s / math.sqrt(squared)) * qw
    on_face = gradient[active]
    level = float(on_face.mean())
    if not float(np.abs(on_face - level).max()) <= KKT_TOL:
        return -1
    slack = np.where(active, np.inf, gradient - level)
    worst = int(np.argmin(slack))
    return None if slack[worst] >= -KKT_TOL else worst


# --- Nash-MTL -------------------------------------------------------------------------------------------------


def nash_alpha(gramian: Array, start: Array) -> Array | None:
    """The alpha > 0 with G alpha = 1 / alpha, from ``start`` (> 0), by Newton steps on the strictly convex
    f(alpha) = 1/2 alpha^T G alpha - sum(log alpha) (gradient G alpha - 1 / alpha, Hessian G + diag(1 / alpha^2));
    None where they do not converge (there is no such alpha where some alpha >= 0, alpha != 0, has G alpha = 0).
    They stop where every alpha_i (G alpha)_i is within ``NASH_TOL`` of 1, or where the step has become rounding
    (``NASH_FLAT``) with alpha_i (G alpha)_i within ``NASH_ACCEPT`` of 1.

    f is self-concordant: with the Newton decrement lambda, the full step is taken where lambda < 1/4 (quadratic
    convergence) or where it keeps alpha > 0 and decreases f (Armijo); otherwise the damped step 1 / (1 + lambda),
    which stays in the domain and decreases f by at least lambda - log(1 + lambda)."""
    if not (np.isfinite(gramian).all() and np.isfinite(start).all() and (start > 0.0).all()):
        return None
    alpha = start.astype(np.float64, copy=True)

    def objective(x: Array) -> float:
        return 0.5 * float(x @ gramian @ x) - float(np.log(x).sum())

    for _ in range(NASH_MAX_ITER):
        products = gramian @ alpha
        residual = float(np.abs(alpha * products - 1.0).max())
        if residual <= NASH_TOL:
            return alpha
        gradient = products - 1.0 / alpha
        hessian = gramian + np.diag(1.0 / (alpha * alpha))
        try:
            direction = -np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return None
        decrement = -float(gradient @ direction)  # lambda^2
        if not (np.isfinite(direction).all() and decrement >= 0.0):
            return None
        if decrement <= NASH_FLAT:
            return alpha if residual <= NASH_ACCEPT else None
        candidate = alpha + direction
        if decrement >= 1.0 / 16.0 and not (
            (candidate > 0.0).all() and objective(candidate) <= objective(alpha) - 1e-4 * decrement
        ):
            candidate = alpha + direction / (1.0 + math.sqrt(decrement))
        alpha = candidate
    return None


class NashMTLWeighting:
    """The weights of torchjd's ``NashMTL`` (its step decision: G alpha = 1 / alpha, the norm of alpha^T J capped at
    ``max_norm``, a new alpha every ``update_weights_every`` steps and the last one between), from the Gramian G,
    with alpha found by ``nash_alpha`` (Newton, warm started from the last solve's alpha). Where Newton does not
    converge, that step's alpha is torchjd's: a ``NashMTL`` weighting reset to its initial state (warm start 1) and
    given a factor R of G (R R^T = G); the next solve warm-starts from its answer where that is positive. Stateful
    like torchjd's; ``reset`` starts afresh. ``fallbacks`` counts the steps torchjd solved."""

    def __init__(self, n_tasks: int, max_norm: float, update_weights_every: int) -> None:
        self.n_tasks = n_tasks
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.fallback: jd.NashMTL | None = None
        self.fallbacks = 0
        self.reset()

    def reset(self) -> None:
        self.step = 0
        self.alpha = np.ones(self.n_tasks)  # on the scale of G (what torchjd keeps)
        self.start = np.ones(self.n_tasks)  # on the scale of G / ||G||_F (where Newton runs)

    def __call__(self, gramian: Tensor) -> Tensor:
        """The weights for the host Gramian ``gramian`` (T x T, float64)."""
        g = gramian.detach().cpu().numpy().astype(np.float64)
        if self.step % self.update_weights_every == 0:
            self.alpha = self._solve(g)
        self.step += 1
        alpha = self.alpha
        if self.max_norm > 0:
            norm = math.sqrt(max(float(alpha @ g @ alpha), 0.0))
            if norm > self.max_norm:
                alpha = (alpha / norm) * self.max_norm
        return torch.from_numpy(np.array(alpha, dtype=np.float64)).to(gramian.device, gramian.dtype)

    def _solve(self, g: Array) -> Array:
        scale = float(np.linalg.norm(g))
        if scale == 0.0:  # no task has a gradient: the aggregate is 0 whatever alpha (torchjd's solve fails on it)
            return self.alpha
        if math.isfinite(scale):
            normalized = nash_alpha(g / scale, self.start)
            if normalized is not None:
                self.start = normalized
                return normalized / math.sqrt(scale)
        self.fallbacks += 1
        alpha = self._torchjd(g)
        if math.isfinite(scale) and np.isfinite(alpha).all() and (alpha > 0.0).all():
            self.start = alpha * math.sqrt(scale)
        return alpha

    def _torchjd(self, g: Array) -> Array:
        """torchjd's alpha for this step, from its initial state, given a factor of G."""
        if self.fallback is None:
            self.fallback = jd.NashMTL(n_tasks=self.n_tasks, max_norm=0.0, update_weights_every=1)
        self.fallback.reset()
        eigenvalues, vectors = np.linalg.eigh(g)
        factor = torch.from_numpy(vectors * np.sqrt(np.clip(eigenvalues, 0.0, None)))
        with warnings.catch_warnings():
            # cvxpy warns at every solve that the problem is not DPP, and whenever ECOS stops short of its tolerance.
            warnings.filterwarnings("ignore", message=".*(not DPP|may be inaccurate).*", category=UserWarning)
            alpha = self.fallback.weighting(factor)
        return alpha.detach().numpy().astype(np.float64)


# --- GradDrop -------------------------------------------------------------------------------------------------


def graddrop(matrix: Tensor, leak: Tensor | None = None) -> Tensor:
    """torchjd's ``GradDrop`` (identity f) of ``matrix`` (one row per task), bit for bit under the same generator
    state, in whole-matrix operations.

    torchjd: P = 1/2 (1 + sum_i J_i / sum_i |J_i|); U = torch.rand(P.shape); task i keeps its coordinate where
    (P > U and J_i > 0) or (P < U and J_i < 0), i.e. where sign(J_i) = sign(P - U) (the difference of two floats
    is 0 only where they are equal, and has the right sign); M_i is 1 there, 0 elsewhere (and where P is NaN: every
    J_i is 0 there); the aggregate is sum_i (leak_i + (1 - leak_i) M_i) J_i, added in task order from 0. Without
    leak, M_i J_i is s relu(s J_i) with s = sign(P - U) (exact: s is 0 or +-1), so the sum is s times the sum of
    relu(s J_i). sign(P - U) is taken as sign(2 P - 2 U), 2 P = 1 + sum_i J_i / sum_i |J_i| as torchjd rounds it
    (its halving is exact)."""
    n_tasks = matrix.shape[0]
    if n_tasks == 0 or matrix.shape[1] == 0:
        return torch.zeros(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    if leak is not None and leak.shape[0] != n_tasks:
        raise ValueError(f"graddrop: {leak.shape[0]} leak values for {n_tasks} tasks")
    if n_tasks == 2:  # a sum of two terms is rounded once, whatever the order: torchjd's sum(dim=0) exactly
        first, second = matrix[0], matrix[1]
        total, mass = first + second, first.abs().add_(second.abs())
    else:
        total, mass = matrix.sum(dim=0), matrix.abs().sum(dim=0)
    doubled = total.div_(mass).add_(1.0)  # 2 P: torchjd's 0.5 * (1 + total / mass) before the (exact) halving
    draw = torch.rand(doubled.shape, dtype=matrix.dtype, device=matrix.device)
    sign = doubled.sub_(draw, alpha=2.0).sign_().nan_to_num_(0.0)  # sign(2 P - 2 U) = sign(P - U)
    if leak is None:
        kept = (matrix * sign).clamp_min_(0.0)
        return _sum_rows(kept).mul_(sign).add_(0.0)  # + 0 turns -0 into 0, as torchjd's sum from 0 leaves it
    mask = (torch.sign(matrix) * sign).clamp_min_(0.0).to(leak.dtype)
    share = leak.to(matrix.device).unsqueeze(1)
    coefficient = share + (1 - share) * mask
    return _sum_rows(coefficient * matrix).add_(0.0)


def _sum_rows(rows: Tensor) -> Tensor:
    """The rows' sum, added in order (first + second, then + third, ...), as torchjd's loop adds them."""
    if rows.shape[0] == 1:
        return rows[0].clone()
    total = rows[0] + rows[1]
    for row in rows[2:]:
        total += row
    return total
