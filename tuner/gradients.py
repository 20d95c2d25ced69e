"""Every task's own gradient on shared parameters, without one autograd call per task: its norm on the last shared
layer's parameters W (GradNorm), or the whole of it on every shared parameter (the gradient aggregators).

GradNorm needs ||grad_W L_i|| for every task i. Asking autograd for the T gradients at once (``is_grads_batched``
with the T unit vectors, ``task_grad_norms``) runs every head's backward pass once per task: T^2 head backward
passes, although a head only ever carries its own task's gradient. ``GradNormTap`` gets the same numbers from the
step's own backward pass instead:

- during the forward pass each task's head modules read a view of their inputs; in the step's backward pass each
  view keeps its gradient (``retain_grad``, no call back into Python), c_i dL_i/da, the gradient task i's head sends
  back to the shared part (c_i is the task's weight in the step's loss, d loss/dL_i, the losses' kept gradient);
- when the backward pass reaches a head input (every head reading it has sent its gradient, and the graph below it
  is still there), one batched pass starts from it with those gradients, one task per batch entry, and runs through
  the shared layers between it and W only: T times the part of the graph above W, never a head; nothing has to be
  kept after the step's backward pass;
- ||grad_W L_i|| = ||grad_W (c_i L_i)|| / c_i.

When W is an ``nn.Linear`` and only elementwise operations (activations, dropout) lie between its output z and the
heads' inputs, the batched pass is not needed: task i's gradient on z is its gradient on the head input times the
elementwise derivative (ReLU's own rule, or one plain autograd call), and grad_W L_i = g_i^T x, grad_b L_i = sum g_i,
with x the layer's input recorded in the forward pass: one matrix product for all tasks, their g_i side by side.

That is exact when task i's gradient reaches W only through task i's views. A walk of the part of the backward
graph recorded after the first head ran checks it every step, before the backward pass; a model where it does not
hold (a loss reading another task's head or the shared features directly, a chain through which one head feeds
another, a head that modifies its input in place) gets ``task_grad_norms`` instead, exact as well.

``TaskJacobian`` records the same views for the gradient aggregators, which need every task's whole gradient on the
shared parameters (the Jacobian, one row per task): one autograd call through the heads gives each view its task's
gradient and the heads their own gradients, and one autograd call runs through the shared part, batched
over the tasks, from the views' gradients stacked by task. The same check decides; where it fails the batched pass
starts from the losses.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, Node, get_gradient_edge

from tuner.problems import tree_map


@dataclass(eq=False, slots=True)
class _View:
    """A head's input as the head reads it: a view, whose gradient is what the head sends back."""

    task: int
    source: Tensor  # the tensor the head was given
    edge: tuple[Node, int]  # where the source's gradient went when the head read it
    node: Node  # the view's own node
    view: Tensor  # the view itself
    grad: Tensor | None = None


@dataclass(eq=False)
class _Source:
    """A tensor heads read, with their views of it."""

    tensor: Tensor
    views: list[_View] = field(default_factory=list)
    reached: bool = False


class TaskNorms(NamedTuple):
    """One step's gradient norms of every task on W, as the step backpropagated them: ``scaled[i]`` is
    ||grad_W (c_i L_i)||, c_i = ``weights[i]`` being task i's weight in the loss backpropagated (with a gradient
    scaler, times its scale). A named tuple: made every step, it costs a fraction of a dataclass."""

    scaled: Tensor
    weights: Tensor

    @classmethod
    def of(cls, norms: Tensor, weights: Tensor) -> TaskNorms:
        """From the unweighted norms ||grad_W L_i||."""
        return cls(norms * weights.abs(), weights)

    @property
    def norms(self) -> Tensor:
        """||grad_W L_i||_2 for every task (shape T, float32); NaN for a task whose weight is zero (it sent no
        gradient back)."""
        return self.scaled / self.weights.abs()


class HeadViews:
    """The tensors each task's heads read in a recorded forward pass, given to the heads as views.

    ``heads[i]`` are task i's own modules (``task_modules`` finds them). A view's gradient is what its task's heads
    send back to the shared part; ``_sources`` checks on the recorded graph that every task's gradient reaches
    ``params`` only through its own views.
    """

    def __init__(self, heads: Sequence[Sequence[nn.Module]], params: Sequence[Tensor]) -> None:
        self.heads = [list(modules) for modules in heads]
        # The parameters' gradient accumulators, held so that every step's graph uses these same nodes (as
        # DistributedDataParallel holds them for its hooks).
        self._accumulators = {get_gradient_edge(p).node for p in params}
        # The heads' own parameters' accumulators (held likewise): leaves off W's path, which ``_sources`` need not
        # visit.
        self._head_leaves = {
            get_gradient_edge(p).node for modules in heads for m in modules for p in m.parameters() if p.requires_grad
        } - self._accumulators  # a head's parameter tied to W's stays one the walk must find
        self._views: list[_View] = []
        # Nodes that existed before any head ran (what the first head read): no view lies below them.
        self._before_heads: set[Node] = set()

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record the forward pass run inside this context: the heads read views of their inputs.

        For the context's duration each watched module's ``forward`` is wrapped by an instance attribute, which
        ``nn.Module.__call__`` looks up before the class's method, as accelerate's module hooks do: unlike a forward
        hook, it keeps the call on ``nn.Module``'s fast path. The modules are left as they were on exit."""
        self._clear()
        wrapped: dict[int, tuple[nn.Module, Callable[..., Any]]] = {}  # by module: one held under two names once
        for task, modules in enumerate(self.heads):
            for module in modules:
                wrapped.setdefault(id(module), (module, partial(self._call_head, task, module.forward)))
        for module, forward in self._wrapped():
            wrapped.setdefault(id(module), (module, forward))
        priors = [(module, vars(module).get("forward")) for module, _ in wrapped.values()]
        try:
            for module, forward in wrapped.values():
                vars(module)["forward"] = forward
            yield
        finally:
            for module, prior in reversed(priors):
                if prior is None:
                    vars(module).pop("forward", None)
                else:
                    vars(module)["forward"] = prior

    def _wrapped(self) -> list[tuple[nn.Module, Callable[..., Any]]]:
        """Further modules whose ``forward`` the recorded pass wraps, with their wrappers."""
        return []

    def _call_head(self, task: int, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        first = not self._views
        if not kwargs and len(args) == 1 and isinstance(args[0], Tensor):  # the common case, without tree_map
            return forward(self._view(task, first, args[0]))
        view = partial(self._view, task, first)
        return forward(*tree_map(view, args), **(tree_map(view, kwargs) if kwargs else kwargs))

    def _view(self, task: int, first: bool, t: Tensor) -> Tensor:
        if not t.requires_grad:
            return t
        v = t.view_as(t)  # a view, not a copy: a head that modifies its input in place still does so
        node = v.grad_fn
        assert node is not None
        self._keep(v)
        edge = _edge(t)
        self._views.append(_View(task, t, edge, node, v))
        if first:
            self._before_heads.add(edge[0])
        return v

    def _keep(self, view: Tensor) -> None:
        """Have the backward pass keep ``view``'s gradient, where the views' gradients are read from the views."""

    def _clear(self) -> None:
        self._views, self._before_heads = [], set()

    def _sources(self, losses: Tensor) -> list[_Source] | None:
        """The heads' inputs with their views; ``None`` when some task's gradient may reach the parameters other
        than through its own views, or reach another task's views."""
        roots = losses.grad_fn.next_functions if losses.grad_fn is not None else ()
        views = self._views
        if len(roots) != losses.shape[0] or not views:
            return None
        view_task = {v.node: v.task for v in views}
        before, accumulators, leaves = self._before_heads, self._accumulators, self._head_leaves
        # From each loss: its own views only, never another task's, the shared part or the parameters around them.
        for task, (root, _) in enumerate(roots):
            if root is None:
                continue
            stack, seen = [root], {root}
            while stack:
                node = stack.pop()
                owner = view_task.get(node)
                if owner is not None:  # a view: the walk stops there
                    if owner != task or node in before:
                        return None
                    continue
                if node in before or node in accumulators:
                    return None
                for child, _ in node.next_functions:
                    if child is not None and child not in seen and child not in leaves:
                        seen.add(child)
                        stack.append(child)
        sources: dict[tuple[Node, int], _Source] = {}
        for v in views:
            source = sources.get(v.edge)
            if source is None:
                source = sources[v.edge] = _Source(v.source)
            source.views.append(v)
        if any(_edge(s.tensor) != edge for edge, s in sources.items()):
            return None  # a source modified in place after a head read it: its graph is not the one the head read
        # An input made after some head ran (a chain's feature) may lead back into that head: its view would carry
        # the other task's gradient too.
        later = [node for node, _ in sources if node not in self._before_heads]
        if later and any(node in view_task for node in _walk(later, view_task.keys() | before)):
            return None
        return list(sources.values())


class GradNormTap(HeadViews):
    """Per-task gradient norms on ``layer``'s parameters, for one training step at a time.

    ``heads[i]`` are task i's own modules (``task_modules`` finds them). A step runs its forward pass inside
    ``recording()`` and its backward pass with ``backward(losses, loss)``, which returns the norms (``TaskNorms``).
    """

    def __init__(self, layer: nn.Module, heads: Sequence[Sequence[nn.Module]]) -> None:
        self.layer = layer
        self.params = [p for p in layer.parameters() if p.requires_grad]
        super().__init__(heads, self.params)
        # An nn.Linear whose only parameters are its weight and bias: its gradients have a closed form.
        self._linear = isinstance(layer, nn.Linear) and {id(p) for p in layer.parameters()} <= {
            id(layer.weight),
            id(layer.bias),
        }
        trained = {id(p) for p in self.params}
        self._trains_weight = id(getattr(layer, "weight", None)) in trained
        self._trains_bias = id(getattr(layer, "bias", None)) in trained
        # The Linear layer's calls in the recorded pass: its input, its output and where the output's gradient goes
        # (taken when the layer returns: an in-place operation on the output later moves the output's own edge).
        self._calls: list[tuple[Tensor, Tensor, tuple[Node, int]]] = []
        self._nested = False
        self._ones: Tensor | None = None  # the column of ones of the closed form, kept from step to step

    @classmethod
    def of(cls, model: nn.Module, layer: nn.Module, task_params: Sequence[Sequence[nn.Parameter]]) -> GradNormTap:
        """The tap for ``model`` whose tasks own ``task_params`` (a problem's ``parameter_groups``)."""
        return cls(layer, task_modules(model, task_params))

    def _wrapped(self) -> list[tuple[nn.Module, Callable[..., Any]]]:
        return [(self.layer, partial(self._call_layer, self.layer.forward))] if self._linear else []

    def _keep(self, view: Tensor) -> None:
        # In the view's .grad: kept by autograd itself, without a call back into Python during the backward pass.
        view.retain_grad()

    def _call_layer(self, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        output = forward(*args, **kwargs)
        if args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
            self._calls.append((args[0].detach(), output, _edge(output)))
        return output

    def backward(self, losses: Tensor, loss: Tensor) -> TaskNorms:
        """Backpropagate ``loss`` (the step's loss, from the stacked per-task ``losses``, shape T) into every
        parameter's ``.grad``, and return every task's gradient norm on W.

        The norms are measured on what the step backpropagates: with a gradient scaler's scaled loss, small
        gradients do not underflow.
        """
        try:
            sources = self._sources(losses)
            if sources is None:
                norms = task_grad_norms(losses, self.params)  # before the backward pass frees the graph
                return TaskNorms.of(norms, _backward(losses, loss))
            for v in self._views:  # what another autograd pass through the views left there (a loss's own)
                v.view.grad = None
            closed = self._closed_form(sources)
            grads: list[Tensor | None] = [None] * len(self.params)
            if closed is None:
                handles = [s.tensor.register_hook(partial(self._reached, s, grads, losses.shape[0])) for s in sources]
            try:
                weights = _backward(losses, loss)
            finally:
                if closed is None:
                    for handle in handles:
                        handle.remove()
            scaled = self._linear_norms(sources, closed, losses) if closed is not None else _norms(grads, losses)
            return TaskNorms(scaled, weights)
        finally:
            self._clear()  # the step's graph is freed with it

    def _closed_form(self, sources: Sequence[_Source]) -> list[Tensor | None] | None:
        """For the closed form on a Linear layer called once: per source, its derivative by the layer's output,
        elementwise (``None`` where the source is the output itself); ``None`` when some source is not an elementwise
        function of the output. Taken before the step's backward pass, which frees the graph."""
        if not self._linear or len(self._calls) != 1:
            return None
        _, output, target = self._calls[0]
        chained: list[Node | None] = []  # the node next to the source, when there is one between
        for s in sources:
            if s.tensor.shape != output.shape:  # an elementwise chain keeps the shape (a broadcast would not)
                return None
            edge = first = _edge(s.tensor)
            while edge != target:
                node = edge[0]
                live = [(child, nr) for child, nr in node.next_functions if child is not None]
                if node.name() not in _ELEMENTWISE or len(live) != 1:
                    return None
                edge = live[0]
            chained.append(None if first == target else first[0])
        return [_derivative(s.tensor, target, first) for s, first in zip(sources, chained, strict=True)]

    def _linear_norms(self, sources: Sequence[_Source], derivatives: Sequence[Tensor | None], losses: Tensor) -> Tensor:
        """Per task, the norm of the Linear layer's weight and bias gradients together, from its output's gradient
        g (what the views received, times the elementwise derivatives): ||g^T [x 1]||, the bias being the weight of an
        input fixed at 1. Every task's g sits side by side in one N x (T out) matrix: one product for all."""
        n = losses.shape[0]
        gz: Tensor | None = None
        for source, derivative in zip(sources, derivatives, strict=True):
            received = _received(source)
            if not received:
                continue
            g = _per_task(received, n, dim=-2)  # ... x T x out
            if derivative is not None:
                g = g.mul_(derivative.unsqueeze(-2))  # g is the fresh stack of the views' gradients
            gz = g if gz is None else gz + g
        if gz is None or not self.params:
            return torch.zeros(n, device=losses.device)
        out = gz.shape[-1]
        g = _float32(gz.view(-1, n * out))  # N x (T out), task i's columns i out ... (i + 1) out - 1
        if not self._trains_weight:  # the bias alone
            return torch.linalg.vector_norm(g.sum(dim=0).view(n, out), dim=1)
        x = self._calls[0][0]
        x = _float32(x if x.dim() == 2 else x.reshape(-1, x.shape[-1]))
        if self._trains_bias:  # the bias is the weight of an input fixed at 1
            ones = self._ones
            if ones is None or ones.shape[0] != x.shape[0] or ones.device != x.device:
                ones = self._ones = x.new_ones(x.shape[0], 1)
            x = torch.cat((x, ones), dim=1)
        return _outer_norms(g, x, n)

    def _reached(self, source: _Source, grads: list[Tensor | None], n: int, _: Tensor) -> None:
        """The backward pass is at ``source``: add each task's gradient on W through it to ``grads``."""
        if self._nested or source.reached:  # a batched pass from another source running through this one
            return
        source.reached = True
        received = _received(source)  # every head reading the source has sent its gradient
        if not received:
            return
        self._nested = True
        try:
            batched = _batched([source.tensor], self.params, [_per_task(received, n)])
        finally:
            self._nested = False
        for i, g in enumerate(batched):
            if g is not None:
                prior = grads[i]
                grads[i] = g if prior is None else prior + g

    def _clear(self) -> None:
        super()._clear()
        self._calls = []


@dataclass(eq=False)
class TaskGradients:
    """One step's gradients of every task on the shared parameters: ``matrix`` is the Jacobian J (T x n, one row per
    task, the parameters flattened and concatenated in order), unscaled."""

    matrix: Tensor
    params: list[nn.Parameter]
    scale: Tensor | None = None

    def gramian(self) -> Tensor:
        """J J^T (T x T): the inner product of every pair of tasks' gradients."""
        return self.matrix @ self.matrix.T

    def apply(self, vector: Tensor) -> None:
        """Accumulate ``vector`` (shape n: the shared parameters' gradient, unscaled) into their ``.grad``, times the
        gradient scaler's scale, as a scaled backward pass would leave it. Gradients that were not finite leave a
        vector that is not either: the scaler skips the step, or the loop stops on the losses, as for a plain
        backward pass."""
        if self.scale is not None:
            vector = vector * self.scale
        _accumulate(self.params, vector.split([p.numel() for p in self.params]))


class TaskJacobian(HeadViews):
    """Every task's gradient on the shared parameters, one row per task (the Jacobian that gradient aggregators
    combine), for one training step at a time; every task parameter gets the plain gradient of the losses' sum.

    A step runs its forward pass inside ``recording()`` and then ``backward(losses, scale)``. One autograd call on
    the losses' sum runs through the heads only: it leaves each task parameter's gradient in ``.grad`` (its own
    loss's, as a plain backward pass would) and gives each view of a head input its task's gradient. One autograd
    call (``is_grads_batched``) then runs through the shared part, batched over the tasks, from the head inputs
    with those gradients stacked by task: T times the shared part's backward work in one call, the heads once.
    Where a task's gradient may reach the shared parameters other than through its own views (a ``through``
    chain, a loss that reads shared features, a head input modified in place), the batched pass starts from the
    losses instead and runs through the heads as well.
    """

    def __init__(
        self,
        shared: Sequence[nn.Parameter],
        tasks: Sequence[Sequence[nn.Parameter]],
        heads: Sequence[Sequence[nn.Module]],
    ) -> None:
        self.shared = [p for p in shared if p.requires_grad]
        super().__init__(heads, self.shared)
        self.task_params = list({id(p): p for params in tasks for p in params if p.requires_grad}.values())

    @classmethod
    def of(
        cls, model: nn.Module, shared: Sequence[nn.Parameter], tasks: Sequence[Sequence[nn.Parameter]]
    ) -> TaskJacobian:
        """The Jacobian of ``model`` whose shared part owns ``shared`` and whose tasks own ``tasks`` (a problem's
        ``parameter_groups``)."""
        return cls(shared, tasks, task_modules(model, tasks))

    def backward(self, losses: Tensor, scale: Tensor | None = None) -> TaskGradients:
        """The gradients of the stacked per-task ``losses`` (shape T) on the shared parameters; the task
        parameters' gradients are accumulated into their ``.grad``. With a gradient scaler's ``scale`` the losses
        are backpropagated times the scale (small gradients do not underflow in half precision) and ``.grad`` is
        left scaled, as a scaled backward pass leaves it; the Jacobian returned is unscaled."""
        n = losses.shape[0]
        scaled = losses * scale if scale is not None else losses
        try:
            sources = self._sources(losses)
            rows = self._from_losses(scaled) if sources is None else self._from_heads(scaled, sources, n)
        finally:
            self._clear()  # the step's graph is freed with it
        matrix = torch.cat([r.reshape(n, -1) for r in rows], dim=1) if rows else losses.new_zeros((n, 0))
        return TaskGradients(matrix / scale if scale is not None else matrix, self.shared, scale)

    def _from_heads(self, scaled: Tensor, sources: Sequence[_Source], n: int) -> tuple[Tensor, ...]:
        views = [v for s in sources for v in s.views]
        edges = [*(get_gradient_edge(p) for p in self.task_params), *(GradientEdge(v.node, 0) for v in views)]
        grads = torch.autograd.grad(scaled.sum(), edges, retain_graph=True, allow_unused=True)
        _accumulate(self.task_params, grads[: len(self.task_params)])
        for v, g in zip(views, grads[len(self.task_params) :], strict=True):
            v.grad = g
        outputs, per_task = [], []
        for s in sources:
            received = [v for v in s.views if v.grad is not None]
            if received:
                outputs.append(s.tensor)
                per_task.append(_per_task(received, n))
        if not outputs or not self.shared:
            return tuple(p.new_zeros((n, *p.shape)) for p in self.shared)
        return self._jacobian(outputs, per_task, n)

    def _from_losses(self, scaled: Tensor) -> tuple[Tensor, ...]:
        if self.task_params:
            grads = torch.autograd.grad(scaled.sum(), self.task_params, retain_graph=True, allow_unused=True)
            _accumulate(self.task_params, grads)
        if not self.shared:
            return ()
        n = scaled.shape[0]
        return self._jacobian([scaled], [torch.eye(n, device=scaled.device, dtype=scaled.dtype)], n)

    def _jacobian(self, outputs: Sequence[Tensor], per_task: Sequence[Tensor], n: int) -> tuple[Tensor, ...]:
        """Every task's gradient on the shared parameters from ``per_task`` (the gradients on ``outputs``, stacked
        by task): one autograd call batched over the tasks; zeros where a parameter is not reached."""
        grads = _batched(outputs, self.shared, per_task, keep=False)
        return tuple(p.new_zeros((n, *p.shape)) if g is None else g for p, g in zip(self.shared, grads, strict=True))


def task_modules(model: nn.Module, task_params: Sequence[Sequence[nn.Parameter]]) -> list[list[nn.Module]]:
    """Per task, the largest modules of ``model`` whose parameters all belong to that task (its heads)."""
    owner = {id(p): task for task, params in enumerate(task_params) for p in params}
    heads: list[list[nn.Module]] = [[] for _ in task_params]

    def visit(module: nn.Module) -> None:
        owners = {owner.get(id(p), -1) for p in module.parameters()}
        if len(owners) == 1 and -1 not in owners:
            heads[owners.pop()].append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return heads


def task_grad_norms(losses: Tensor, params: Sequence[Tensor]) -> Tensor:
    """||grad_W L_i||_2 over ``params`` (all of them together) for every task i (shape T), from one autograd call
    through the whole graph between the losses and ``params``, vectorised over the tasks; the graph is kept."""
    n = losses.shape[0]
    eye = torch.eye(n, device=losses.device, dtype=losses.dtype)
    return _norms(_batched([losses], params, [eye]), losses)


def _batched(
    outputs: Sequence[Tensor], inputs: Sequence[Tensor], grads: Sequence[Tensor], keep: bool = True
) -> tuple[Tensor | None, ...]:
    """Entry i of each result is the gradient for entry i of ``grads``: autograd vectorises over the entries
    (``None`` for an input not reached). The graph is kept (for the step's own backward pass) unless ``keep`` is
    false."""
    return torch.autograd.grad(
        outputs, inputs, list(grads), is_grads_batched=True, retain_graph=keep, allow_unused=True
    )


def _backward(losses: Tensor, loss: Tensor) -> Tensor:
    """Backpropagate ``loss`` and return each task's weight in it: the gradient it sends the stacked per-task
    ``losses`` (kept by autograd, like the views'; zeros where it does not depend on them). The losses' own
    ``.grad`` is left as the caller had it."""
    retained = losses.retains_grad
    prior = losses.grad if retained else None  # the caller's own, when it keeps the losses' gradient too
    if not retained:
        losses.retain_grad()
    loss.backward()
    weights = losses.grad
    if not retained:
        losses.grad = None
    elif weights is not None and prior is not None:
        weights = weights - prior
    return weights if weights is not None else torch.zeros_like(losses)


def _float32(t: Tensor) -> Tensor:
    """``t`` in float32, without a call where it already is (a call costs as much as the arithmetic here)."""
    return t if t.dtype == torch.float32 else t.float()


def _edge(t: Tensor) -> tuple[Node, int]:
    node = t.grad_fn
    if node is not None:
        return node, t.output_nr
    edge = get_gradient_edge(t)  # a leaf: its gradient accumulator
    return edge.node, edge.output_nr


def _walk(starts: Iterable[Node | None], stop: Collection[Node]) -> Iterator[Node]:
    """Every node of the backward graph reachable from ``starts``, not going past the nodes in ``stop``."""
    stack = [node for node in starts if node is not None]
    seen = set(stack)
    while stack:
        node = stack.pop()
        yield node
        if node in stop:
            continue
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                stack.append(child)


def _received(source: _Source) -> list[_View]:
    """The views of ``source`` that received a gradient in the backward pass, their ``grad`` taken from the view."""
    received = []
    for v in source.views:
        v.grad = v.view.grad
        if v.grad is not None:
            received.append(v)
    return received


def _per_task(views: Sequence[_View], n: int, dim: int = 0) -> Tensor:
    """The gradients the views of one input received, stacked by task along ``dim`` (zeros for a task with
    none)."""
    if len(views) == n and all(v.task == i for i, v in enumerate(views)):  # one view per task, in order: the rule
        return torch.stack([v.grad for v in views], dim=dim)  # type: ignore[misc]
    slots: list[Tensor | None] = [None] * n
    for v in views:
        assert v.grad is not None
        prior = slots[v.task]
        slots[v.task] = v.grad if prior is None else prior + v.grad
    like = next(s for s in slots if s is not None)
    return torch.stack([s if s is not None else torch.zeros_like(like) for s in slots], dim=dim)


#: Autograd nodes of elementwise operations with one differentiable input: activations, and a product or quotient
#: with a constant (dropout's mask, a scale).
_ELEMENTWISE = frozenset(
    {
        "ReluBackward0",
        "GeluBackward0",
        "SiluBackward0",
        "TanhBackward0",
        "SigmoidBackward0",
        "LeakyReluBackward0",
        "EluBackward0",
        "CeluBackward0",
        "SoftplusBackward0",
        "MishBackward0",
        "HardswishBackward0",
        "HardsigmoidBackward0",
        "HardtanhBackward0",
        "LogSigmoidBackward0",
        "NativeDropoutBackward0",
        "MulBackward0",
        "MulBackward1",
        "DivBackward0",
        "DivBackward1",
    }
)


def _derivative(source: Tensor, target: tuple[Node, int], first: Node | None) -> Tensor | None:
    """d source / d output, elementwise, for a source that is an elementwise function of the layer's output (whose
    gradient goes to ``target``; ``first`` is the node next to the source; ``None``: the source is the output)."""
    if first is None:
        return None
    if first.name() == "ReluBackward0" and first.next_functions[0] == target:
        return source.detach().sign()  # ReLU's own rule: its result is >= 0, 1 where > 0 (the gradient passes)
    ones = torch.ones_like(source)
    return torch.autograd.grad(source, GradientEdge(*target), ones, retain_graph=True)[0]


def _outer_norms(g: Tensor, x: Tensor, tasks: int) -> Tensor:
    """||g_i^T x||_F for every task i, g holding task i's N x out block in its columns i out ... (i + 1) out - 1
    (g: N x (T out); x: N x in), without the T x out x in products when the N x N Gram matrices are smaller."""
    n, inp = x.shape
    out = g.shape[1] // tasks
    if out * inp <= 2 * n * n:
        return torch.linalg.vector_norm((g.T @ x).view(tasks, -1), dim=1)
    # ||g^T x||_F^2 = sum_ab (g g^T)_ab (x x^T)_ab
    per_task = g.view(n, tasks, out).transpose(0, 1)  # T x N x out
    squared = ((per_task @ per_task.transpose(1, 2)) * (x @ x.T)).sum(dim=(1, 2))
    return squared.clamp_min(0.0).sqrt()


def _accumulate(params: Sequence[Tensor], grads: Iterable[Tensor | None]) -> None:
    """Add each gradient into its parameter's ``.grad``, as a backward pass does (``None``: not reached)."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        g = g.reshape(p.shape).to(p.dtype)
        p.grad = g if p.grad is None else p.grad + g


def _norms(grads: Sequence[Tensor | None], losses: Tensor) -> Tensor:
    """Per task (entry), the 2-norm of all its gradients together, in float32: half precision would underflow."""
    parts = [torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=torch.float32) for g in grads if g is not None]
    if not parts:  # no gradient reaches the parameters at all
        return torch.zeros(losses.shape[0], device=losses.device)
    return parts[0] if len(parts) == 1 else torch.linalg.vector_norm(torch.stack(parts), dim=0)
