"""Every task's gradient norm on the last shared layer's parameters W, without one autograd call per task.

GradNorm needs ||grad_W L_i|| for every task i. Asking autograd for the T gradients at once (``is_grads_batched``
with the T unit vectors, ``task_grad_norms``) runs every head's backward pass once per task: T^2 head backward
passes, although a head only ever carries its own task's gradient. ``GradNormTap`` gets the same numbers from the
step's own backward pass instead:

- during the forward pass each task's head modules read a view of their inputs; in the step's backward pass a hook
  on each view receives c_i dL_i/da, the gradient task i's head sends back to the shared part (c_i is the task's
  weight in the step's loss, d loss/dL_i, received by a hook on the losses);
- one batched backward pass then starts from the heads' inputs with those gradients, one task per batch entry, and
  runs through the shared layers between them and W only: T times the part of the graph above W, never a head;
- ||grad_W L_i|| = ||grad_W (c_i L_i)|| / c_i.

That is exact when task i's gradient reaches W only through task i's views. A walk of the part of the backward
graph recorded after the first head ran checks it every step; a model where it does not hold (a loss reading
another task's head or the shared features directly, a chain through which one head feeds another) gets
``task_grad_norms`` instead, exact as well.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, Node, get_gradient_edge

from tuner.problems import tree_map


@dataclass(eq=False)
class _View:
    """A head's input as the head reads it: a view, whose hook keeps the gradient the head sends back."""

    task: int
    source: Tensor  # the tensor the head was given
    edge: GradientEdge  # where the source's gradient went when the head read it
    node: Node  # the view's own node
    grad: Tensor | None = None

    def receive(self, grad: Tensor) -> None:
        self.grad = grad


class GradNormTap:
    """Per-task gradient norms on ``layer``'s parameters, for one training step at a time.

    ``heads[i]`` are task i's own modules (``task_modules`` finds them). A step runs its forward pass inside
    ``recording()`` and its backward pass with ``backward(losses, loss)``, which returns the norms.
    """

    def __init__(self, layer: nn.Module, heads: Sequence[Sequence[nn.Module]]) -> None:
        self.params = [p for p in layer.parameters() if p.requires_grad]
        self.heads = [list(modules) for modules in heads]
        self._views: list[_View] = []
        # Nodes that existed before any head ran (what the first head read): no view lies below them.
        self._before_heads: set[Node] = set()

    @classmethod
    def of(cls, model: nn.Module, layer: nn.Module, task_params: Sequence[Sequence[nn.Parameter]]) -> GradNormTap:
        """The tap for ``model`` whose tasks own ``task_params`` (a problem's ``parameter_groups``)."""
        return cls(layer, task_modules(model, task_params))

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record the forward pass run inside this context: the heads read views of their inputs."""
        self._clear()
        handles = [
            module.register_forward_pre_hook(partial(self._enter_head, task), with_kwargs=True)
            for task, modules in enumerate(self.heads)
            for module in modules
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _enter_head(
        self, task: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        first = not self._views

        def view(t: Tensor) -> Tensor:
            if not t.requires_grad:
                return t
            v = t.view_as(t)  # a view, not a copy: a head that modifies its input in place still does so
            assert v.grad_fn is not None
            record = _View(task, t, get_gradient_edge(t), v.grad_fn)
            v.register_hook(record.receive)
            self._views.append(record)
            if first:
                self._before_heads.add(record.edge.node)
            return v

        return tree_map(view, args), tree_map(view, kwargs)

    def backward(self, losses: Tensor, loss: Tensor) -> Tensor:
        """Backpropagate ``loss`` (the step's loss, from the stacked per-task ``losses``, shape T) into every
        parameter's ``.grad``, and return ||grad_W L_i||_2 for every task (shape T, float32).

        The norms are measured on what the step backpropagates: with a gradient scaler's scaled loss, small
        gradients do not underflow. A task whose weight in ``loss`` is zero sends no gradient back: its norm is NaN.
        """
        received: list[Tensor] = []
        if losses.requires_grad:
            losses.register_hook(received.append)
        loss.backward(retain_graph=True)  # the graph stays for the batched pass below
        try:
            plan = self._plan(losses) if received else None
            if plan is None:
                return task_grad_norms(losses, self.params)
            edges, grads = plan
            return _norms(_batched(edges, self.params, grads), losses) / received[0].float().abs()
        finally:
            self._clear()  # the step's graph is freed with it

    def _clear(self) -> None:
        self._views, self._before_heads = [], set()

    def _plan(self, losses: Tensor) -> tuple[list[Tensor], list[Tensor]] | None:
        """The heads' inputs, each with its per-task gradients (T x its shape); ``None`` when some task's gradient
        may reach W other than through its own views."""
        n = losses.shape[0]
        roots = losses.grad_fn.next_functions if losses.grad_fn is not None else ()
        if len(roots) != n or not self._views:
            return None
        view_task = {v.node: v.task for v in self._views}
        params = {get_gradient_edge(p).node for p in self.params}
        stop = view_task.keys() | self._before_heads
        for task, (root, _) in enumerate(roots):
            for node in _walk([root], stop):
                if view_task.get(node, task) != task or node in params or node in self._before_heads:
                    return None
        sources: dict[GradientEdge, list[_View]] = {}
        for v in self._views:
            if v.grad is not None:
                sources.setdefault(v.edge, []).append(v)
        if any(get_gradient_edge(group[0].source) != edge for edge, group in sources.items()):
            return None  # a source modified in place after a head read it: its graph is no longer the one read
        # An input made after some head ran (a chain's feature) may lead back into that head: its view would carry
        # the other task's gradient too.
        later = [edge.node for edge in sources if edge.node not in self._before_heads]
        if not sources or any(node in view_task for node in _walk(later, stop)):
            return None
        groups = list(sources.values())
        return [group[0].source for group in groups], [_per_task(group, n) for group in groups]


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
    return _norms(_batched([losses], params, [eye], retain=True), losses)


def _batched(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grads: Sequence[Tensor],
    retain: bool = False,
) -> tuple[Tensor | None, ...]:
    """Entry i of each result is the gradient for entry i of ``grads``: autograd vectorises over the entries."""
    return torch.autograd.grad(
        outputs, inputs, list(grads), is_grads_batched=True, retain_graph=retain, allow_unused=True
    )


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


def _per_task(views: Sequence[_View], n: int) -> Tensor:
    """The gradients the views of one input received, stacked by task (zeros for a task with none)."""
    slots: list[Tensor | None] = [None] * n
    for v in views:
        assert v.grad is not None
        prior = slots[v.task]
        slots[v.task] = v.grad if prior is None else prior + v.grad
    like = next(s for s in slots if s is not None)
    return torch.stack([s if s is not None else torch.zeros_like(like) for s in slots])


def _norms(grads: Sequence[Tensor | None], losses: Tensor) -> Tensor:
    """Per task (entry), the 2-norm of all its gradients together, in float32: half precision would underflow."""
    parts = [torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=torch.float32) for g in grads if g is not None]
    if not parts:  # no gradient reaches the parameters at all
        return torch.zeros(losses.shape[0], device=losses.device)
    return parts[0] if len(parts) == 1 else torch.linalg.vector_norm(torch.stack(parts), dim=0)
