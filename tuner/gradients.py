"""Every task's gradient norm on a set of shared parameters, from one batched autograd call."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def task_grad_norms(losses: Tensor, params: Sequence[Tensor]) -> Tensor:
    """||grad_W L_i||_2 over the parameters ``params`` (all of them together), for every task i (shape T).

    One autograd call with the T unit vectors batched (``is_grads_batched``): autograd vectorises the backward
    pass over the tasks instead of running it once per task. The graph is kept for the step's own backward.
    Any layer works, whatever its output's shape (a spatial feature map included).
    """
    n = losses.shape[0]
    eye = torch.eye(n, device=losses.device, dtype=losses.dtype)
    grads = torch.autograd.grad(
        losses, list(params), grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
    )
    # float32 even under autocast: squared norms of small gradients underflow in half precision.
    squares = [g.float().reshape(n, -1).square().sum(dim=1) for g in grads if g is not None]
    if not squares:
        return torch.zeros(n, device=losses.device)
    return torch.stack(squares).sum(dim=0).sqrt()
