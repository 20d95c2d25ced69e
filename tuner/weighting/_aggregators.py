"""Gradient aggregation: the shared parameters step along a combination of every task's gradient, from torchjd.

The aggregators are torchjd's (https://torchjd.org, MIT licence). Each strategy here runs the step's backward pass
itself (``aggregates_gradients``): ``tuner.gradients.TaskJacobian`` gives every task's gradient on the shared
parameters, the Jacobian J (one row per task), from one pass through the heads and one pass through the shared part
batched over the tasks; the strategy turns J into the shared parameters' gradient, and every task parameter keeps
the plain gradient of the losses' sum (a head's own loss's). ``combine`` returns the plain sum of the losses, which
the loop records but does not backpropagate.

Scale. torchjd's aggregators average, except PCGrad, GradDrop and Nash-MTL: where every task's gradient is the same
g they give g. Here those give T g, the plain sum that ``equal`` steps with, so that a learning rate means the same
whichever strategy a study picks; the weights they report are multiplied alike (1 each where the tasks agree).

Reports. ``weight`` is the mean over the epoch's steps of the weight the aggregator gave each task's gradient (the
weights torchjd's weighting computed); GradDrop masks gradients elementwise and has no weights: its ``weight`` is 1.
``cosine`` is the epoch's mean cosine between each task's gradient and the aggregate: below 0 the step worked
against that task. A step whose gradients on the shared parameters were not finite (an fp16 overflow, which the
gradient scaler skips) is left out.

Host reads. Most of torchjd's weightings compute on the host: quadprog (UPGrad, DualProj) solves on numpy arrays;
CAGrad's and Nash-MTL's problems are solved in numpy (``tuner.weighting._solvers``, falling back to torchjd's cvxpy
solves where that cannot certify its answer); PCGrad and MGDA loop on comparisons of tensor values; Aligned-MTL
reads a rank and IMTL-G a threshold. Those get the Gramian J J^T (T x T) copied to the host once per step, in
float64, and only the T weights go back to the device: one synchronisation per step instead of one per comparison.
GradDrop and random weighting stay on the device and read nothing.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor
from torchjd import aggregation as jd

from tuner.config import ConfigError
from tuner.gradients import TaskGradients, TaskJacobian
from tuner.problems import Knob, Task
from tuner.weighting._base import WeightingStrategy
from tuner.weighting._solvers import CAGradWeighting, NashMTLWeighting, graddrop


class GradientAggregator(WeightingStrategy):
    """A strategy that aggregates every task's gradient on the shared parameters (see the module's docstring)."""

    aggregates_gradients: ClassVar[bool] = True
    #: Whether torchjd's aggregation averages the tasks' gradients where they agree: it is multiplied by T.
    averages: ClassVar[bool] = True
    _weight: Tensor
    _cosine: Tensor
    _weight_sum: Tensor
    _cosine_sum: Tensor
    _counted: Tensor

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks)
        self.register_buffer("_weight", torch.ones(self.n_tasks))
        self.register_buffer("_cosine", torch.zeros(self.n_tasks))
        self.register_buffer("_weight_sum", torch.zeros(self.n_tasks), persistent=False)
        self.register_buffer("_cosine_sum", torch.zeros(self.n_tasks), persistent=False)
        self.register_buffer("_counted", torch.zeros(()), persistent=False)

    def combine(self, losses: Tensor) -> Tensor:
        return losses.sum()

    def backward(self, losses: Tensor, jacobian: TaskJacobian, scale: Tensor | None) -> None:
        grads = jacobian.backward(losses, scale)
        weights, vector, cosine = self.aggregate(grads)
        grads.apply(vector)
        # A step whose gradients were not finite (fp16 overflow: the scaler skips it) is left out of the means.
        counted = weights.isfinite().all() & cosine.isfinite().all()
        self._weight_sum += weights.float().where(counted, 0.0)
        self._cosine_sum += cosine.float().where(counted, 0.0)
        self._counted += counted.float()

    @abstractmethod
    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor, Tensor]:
        """From the step's unscaled Jacobian J: the weight of each task's gradient (shape T), the shared parameters'
        gradient (shape n) and the cosine between each task's gradient and it (shape T), all on J's device."""

    def on_epoch_end(self, train_losses: Tensor) -> None:
        seen = self._counted > 0
        steps = self._counted.clamp_min(1.0)
        self._weight = (self._weight_sum / steps).where(seen, self._weight)
        self._cosine = (self._cosine_sum / steps).where(seen, self._cosine)
        self._weight_sum.zero_()
        self._cosine_sum.zero_()
        self._counted.zero_()

    def weights(self) -> Tensor:
        """The mean over the last epoch's steps of each task's weight in the aggregate (1 before the first)."""
        return self._weight.clone()

    def report(self) -> dict[str, Tensor]:
        """``weight`` and ``cosine``, each the mean over the last epoch's steps (see the module's docstring)."""
        return {"weight": self.weights(), "cosine": self._cosine.clone()}


class _GramianWeighted(GradientAggregator):
    """The aggregate is w^T J, with torchjd's ``weighting`` computing w from the Gramian J J^T on the host."""

    def __init__(self, tasks: Sequence[Task], weighting: jd.Weighting) -> None:
        super().__init__(tasks)
        self.weighting = weighting

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor, Tensor]:
        matrix, gramian = grads.matrix, grads.gramian()
        weights = self._weights(_on_host(gramian)).to(matrix.device, matrix.dtype)
        if self.averages:
            weights = weights * self.n_tasks
        return weights, weights @ matrix, _gramian_cosine(gramian, weights)

    def _weights(self, gramian: Tensor) -> Tensor:
        return self.weighting(gramian)


class UPGrad(_GramianWeighted):
    """UPGrad: each task's gradient projected onto the dual cone of all of them (the directions that conflict with
    none), then averaged; the aggregate never has a negative inner product with any task's gradient (to the solver's
    precision: torchjd regularises the Gramian by 1e-4 of its norm).

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (https://arxiv.org/abs/2406.16232).
    torchjd's ``UPGradWeighting``; its projections are quadratic programs solved by quadprog on the host.
    """

    name: ClassVar[str] = "upgrad"
    description: ClassVar[str] = "UPGrad: gradients projected onto their dual cone, averaged (Quinton & Rey, 2024)"

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks, jd.UPGradWeighting())


class PCGrad(_GramianWeighted):
    """PCGrad (gradient surgery): each task's gradient, where it conflicts with another's (negative inner product),
    loses its component along that one, in a random order of the others; the projected gradients are summed.

    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020 (https://arxiv.org/abs/2001.06782).
    torchjd's ``PCGradWeighting``: a loop over task pairs on the host that branches on each inner product, and
    draws its orders from torch's global generator.
    """

    name: ClassVar[str] = "pcgrad"
    description: ClassVar[str] = "PCGrad: conflicting gradients projected apart (Yu et al., NeurIPS 2020)"
    averages: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks, jd.PCGradWeighting())


class CAGrad(_GramianWeighted):
    """CAGrad (conflict-averse gradient descent): the direction, within a ball of radius c ||g_0|| around the average
    gradient g_0, that maximises the smallest improvement of any task.

    Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021
    (https://arxiv.org/abs/2110.14048). torchjd's ``CAGradWeighting`` defines the weights: its dual problem (min
    over the simplex of a^T w + s ||R^T w||, on the Gramian normalised by its trace) and its formula for the weights
    from the solution. torchjd solves that problem with cvxpy (CLARABEL), a new problem every step (15 to 25 ms);
    here an active-set method in numpy (for two tasks, a closed form on the segment) solves the same problem on the
    host in tens of microseconds, and its answer is checked against the problem's optimality conditions; where the
    check fails (a singular Gramian on the optimum's face, c = 0 with ties), the step is torchjd's cvxpy solve
    (``tuner.weighting._solvers``). The two agree to CLARABEL's accuracy (its objective is never lower). c = 0 is
    the average (here the sum).
    """

    name: ClassVar[str] = "cagrad"
    description: ClassVar[str] = "CAGrad: best worst-task step near the average gradient (Liu et al., NeurIPS 2021)"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "c": Knob(0.4, low=0.0, high=1.0, help="radius of the ball around the average gradient, relative to its norm"),
    }

    def __init__(self, tasks: Sequence[Task], c: float = 0.4) -> None:
        if c < 0:
            raise ConfigError(f"strategy_options: cagrad's c must be >= 0, got {c}")
        super().__init__(tasks, CAGradWeighting(c=c))
        self.c = c


class IMTLG(_GramianWeighted):
    """IMTL-G (impartial MTL, gradient balance): the weights, summing to 1, with which the aggregate has the same
    projection onto every task's unit gradient; generalised by torchjd to linearly dependent gradients (with a
    pseudo-inverse). A weight can be negative.

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 (https://discovery.ucl.ac.uk/id/eprint/10120667/).
    torchjd's ``IMTLGWeighting``, on the host (it branches on the weights' sum).
    """

    name: ClassVar[str] = "imtl-g"
    description: ClassVar[str] = "IMTL-G: equal projection on every task's unit gradient (Liu et al., ICLR 2021)"

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks, jd.IMTLGWeighting())


class AlignedMTL(_GramianWeighted):
    """Aligned-MTL: the tasks' gradients are made orthogonal and of equal norm (the Gramian's eigendecomposition, its
    condition number brought to 1, scaled by its smallest, median or mean eigenvalue), then averaged.

    Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023
    (https://openaccess.thecvf.com/content/CVPR2023/papers/Senushkin_Independent_Component_Alignment_for_Multi-Task_Learning_CVPR_2023_paper.pdf).
    torchjd's ``AlignedMTLWeighting``, on the host (it reads the Gramian's rank).
    """

    name: ClassVar[str] = "aligned-mtl"
    description: ClassVar[str] = "Aligned-MTL: gradients made orthogonal, of equal norm (Senushkin et al., CVPR 2023)"
    knobs: ClassVar[Mapping[str, Knob]] = {
        "scale_mode": Knob(
            "min", choices=("min", "median", "rmse"), help="eigenvalue that sets the aligned gradients' scale"
        ),
    }

    def __init__(self, tasks: Sequence[Task], scale_mode: str = "min") -> None:
        if scale_mode not in ("min", "median", "rmse"):
            raise ConfigError(
                f"strategy_options: aligned-mtl's scale_mode must be min, median or rmse, not {scale_mode!r}"
            )
        super().__init__(tasks, jd.AlignedMTLWeighting(scale_mode=scale_mode))  # type: ignore[arg-type]
        self.scale_mode = scale_mode


class MGDA(_GramianWeighted):
    """MGDA: the point of minimum norm in the convex hull of the tasks' gradients (a common descent direction, zero
    at a Pareto-stationary point).

    Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization", 2012
    (https://doi.org/10.1016/j.crma.2012.03.014), solved as in Sener & Koltun, "Multi-Task Learning as
    Multi-Objective Optimization", NeurIPS 2018 (https://arxiv.org/abs/1810.04650): torchjd's ``MGDAWeighting``,
    Frank-Wolfe iterations on the host that branch on tensor values. Its loop never stops early when the minimum is
    one task's gradient (each step then has length 1): that case is found first by its optimality condition,
    g_i . g_j >= ||g_i||^2 for every j, and given weight 1 directly.
    """

    name: ClassVar[str] = "mgda"
    description: ClassVar[str] = "MGDA: min-norm point of the gradients' convex hull (Sener & Koltun, NeurIPS 2018)"

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks, jd.MGDAWeighting())

    def _weights(self, gramian: Tensor) -> Tensor:
        optimal = (gramian >= gramian.diagonal().unsqueeze(1)).all(dim=1)
        if bool(optimal.any()):  # a host tensor: no device synchronisation
            return torch.nn.functional.one_hot(optimal.int().argmax(), gramian.shape[0]).to(gramian.dtype)
        return self.weighting(gramian)


class DualProj(_GramianWeighted):
    """DualProj: the average gradient projected onto the dual cone of the tasks' gradients (the closest direction
    that conflicts with none), as Gradient Episodic Memory projects a gradient.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017 (equation 11;
    https://arxiv.org/abs/1706.08840). torchjd's ``DualProjWeighting``: a quadratic program solved by quadprog on the
    host.
    """

    name: ClassVar[str] = "dualproj"
    description: ClassVar[str] = "DualProj: average gradient projected onto their dual cone (Lopez-Paz & Ranzato, 2017)"

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks, jd.DualProjWeighting())


class NashMTL(GradientAggregator):
    """Nash-MTL: the weights of the Nash bargaining solution between the tasks (alpha > 0 with G alpha = 1 / alpha);
    the aggregate's norm is capped at ``max_norm``.

    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022 (https://arxiv.org/abs/2202.01017).
    torchjd's ``NashMTL`` defines the step: alpha with G alpha = 1 / alpha (G = J J^T; torchjd hands its solver
    G / ||G||_F and ||G||_F, which cancel), the norm of alpha^T J capped at ``max_norm``, a new alpha every
    ``update_weights_every`` steps and the last one in between. torchjd reaches alpha by up to 20 cvxpy (ECOS)
    solves a step, each compiled again (0.1 to 0.3 s a step for 2 to 10 tasks), and stops when alpha changes by
    less than 1e-6. Here alpha is the minimum of the strictly convex 1/2 alpha^T G alpha - sum(log alpha), found by
    Newton steps in numpy on the host (``tuner.weighting._solvers.NashMTLWeighting``), warm-started from the last
    alpha (stateful like torchjd's), to |alpha_i (G alpha)_i - 1| <= 1e-10 (to rounding on an ill-conditioned
    Gramian): the same alpha where torchjd's converges. Where Newton does not converge (no such alpha exists: a task
    without gradient, gradients some positive combination of which is 0), that step's alpha is torchjd's, from a
    ``NashMTL`` reset to its initial state and given a T x T factor of G; where no task has a gradient (G = 0, on
    which torchjd's solve fails) alpha stays the last one. ``update_weights_every`` > 1 keeps alpha for that many
    steps (the paper's faster variants).
    """

    name: ClassVar[str] = "nash-mtl"
    description: ClassVar[str] = "Nash-MTL: Nash bargaining weights of the tasks' gradients (Navon et al., ICML 2022)"
    averages: ClassVar[bool] = False
    knobs: ClassVar[Mapping[str, Knob]] = {
        "max_norm": Knob(1.0, low=0.1, high=10.0, log=True, help="cap on the shared gradient's norm (0: none)"),
        "update_weights_every": Knob(1, help="steps between two solutions of the bargaining problem"),
    }

    def __init__(self, tasks: Sequence[Task], max_norm: float = 1.0, update_weights_every: int = 1) -> None:
        if max_norm < 0:
            raise ConfigError(f"strategy_options: nash-mtl's max_norm must be >= 0, got {max_norm}")
        if update_weights_every < 1:
            raise ConfigError(
                f"strategy_options: nash-mtl's update_weights_every must be >= 1, got {update_weights_every}"
            )
        super().__init__(tasks)
        self.weighting = NashMTLWeighting(
            n_tasks=self.n_tasks, max_norm=max_norm, update_weights_every=int(update_weights_every)
        )

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor, Tensor]:
        matrix, gramian = grads.matrix, grads.gramian()
        weights = self.weighting(_on_host(gramian)).to(matrix.device, matrix.dtype)
        return weights, weights @ matrix, _gramian_cosine(gramian, weights)


class GradDrop(GradientAggregator):
    """GradDrop (gradient sign dropout): at every coordinate, a sign is drawn with probability the share of the
    tasks' gradient mass that is positive there, and only the gradients of that sign are kept, then summed.

    Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020
    (https://arxiv.org/abs/2010.06808). torchjd's ``GradDrop`` rule (identity f), applied to the shared parameters'
    gradients, on the device: ``tuner.weighting._solvers.graddrop`` computes it in a few whole-matrix operations
    instead of torchjd's loop over the tasks (about 10 vector operations each), drawing the same uniform numbers from
    the same generator, and gives torchjd's vector bit for bit. It has no per-task weights: ``weight`` is 1;
    ``cosine`` tells how each task fared.
    """

    name: ClassVar[str] = "graddrop"
    description: ClassVar[str] = "GradDrop: gradient sign dropout on the shared parameters (Chen et al., NeurIPS 2020)"
    averages: ClassVar[bool] = False
    leak: Tensor | None
    knobs: ClassVar[Mapping[str, Knob]] = {
        "leak": Knob(0.0, low=0.0, high=1.0, help="share of every task's gradient kept whatever the drawn sign"),
    }

    def __init__(self, tasks: Sequence[Task], leak: float = 0.0) -> None:
        if not 0.0 <= leak <= 1.0:
            raise ConfigError(f"strategy_options: graddrop's leak must be in [0, 1], got {leak}")
        super().__init__(tasks)
        # torchjd's leak: one value per task, float32 (its dtype sets the one the masks are weighted in); a buffer,
        # so that it moves with the strategy to the Jacobian's device.
        self.register_buffer("leak", torch.full((self.n_tasks,), float(leak)) if leak else None, persistent=False)

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor, Tensor]:
        matrix = grads.matrix
        vector = graddrop(matrix, self.leak)
        return matrix.new_ones(self.n_tasks), vector, _cosine(matrix, vector)


class RandomGrad(GradientAggregator):
    """Random weighting of gradients (RGW): every step the tasks' gradients are combined with weights
    softmax(z), z drawn from a standard normal (here times T).

    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022
    (https://arxiv.org/abs/2111.10603). torchjd's ``RandomWeighting``, on the device, drawing from torch's
    generator of the Jacobian's device.
    """

    name: ClassVar[str] = "random-grad"
    description: ClassVar[str] = "random gradient weighting: softmax of a normal draw per step (Lin et al., TMLR 2022)"

    def __init__(self, tasks: Sequence[Task]) -> None:
        super().__init__(tasks)
        self.weighting = jd.RandomWeighting()

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor, Tensor]:
        matrix = grads.matrix
        weights = self.weighting(matrix) * self.n_tasks
        vector = weights @ matrix
        return weights, vector, _cosine(matrix, vector)


def _on_host(gramian: Tensor) -> Tensor:
    """The Gramian in float64 on the host, where a weighting solves; the identity where it is not finite (a step the
    scaler skips), so that no solver fails on it."""
    host = gramian.to("cpu", torch.float64)
    return host if bool(host.isfinite().all()) else torch.eye(host.shape[0], dtype=host.dtype)


def _gramian_cosine(gramian: Tensor, weights: Tensor) -> Tensor:
    """cos(g_i, d) for d = w^T J, from the Gramian G = J J^T: (G w)_i / (sqrt(G_ii) sqrt(w^T G w))."""
    products = gramian @ weights
    lengths = gramian.diagonal().clamp_min(0.0).sqrt() * (weights @ products).clamp_min(0.0).sqrt()
    return products / lengths.clamp_min(torch.finfo(lengths.dtype).tiny)


def _cosine(matrix: Tensor, vector: Tensor) -> Tensor:
    """cos(g_i, vector) for every row g_i of ``matrix``."""
    lengths = torch.linalg.vector_norm(matrix, dim=1) * torch.linalg.vector_norm(vector)
    return (matrix @ vector) / lengths.clamp_min(torch.finfo(lengths.dtype).tiny)
