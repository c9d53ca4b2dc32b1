"""Every collective operation of training, in one place (torch.distributed; a no-op in a single process).

``train.loop`` sets the process group up (``torchrun``: NCCL on CUDA, gloo on the CPU) and wraps the model in
DistributedDataParallel, which averages gradients over the ranks. Two more collectives are needed beside it:

- :func:`any_rank` — all ranks agree to stop at the same step (the time budget).
- :func:`gather_rows` — the rhythm contrast sees the views of *every* rank's batch (SimCLR's global negatives:
  2 x world_size x batch_size - 2 per row), with gradients flowing back to the rank that computed each row.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def any_rank(flag: bool, device: str | torch.device) -> bool:
    """True when ``flag`` is True on any process, so all ranks leave the loop at the same step (else the others hang
    in the next gradient all-reduce waiting for it); just ``flag`` in a single process."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0; backward sums every rank's gradient of the gathered tensor and keeps this rank's rows.

    Every rank computes the same loss on the gathered rows, so this rank's rows get world_size x their gradient;
    DistributedDataParallel's average over ranks then yields exactly the gradient of that one loss.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        lo, hi = ctx.rows
        return grad[lo:hi]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each rank -> (world_size * n, ...), rank 0's rows first; ``x`` itself in a single process.

    Every rank must pass the same shape (DistributedSampler with ``drop_last`` batches give that); a mismatch is a
    ValueError naming the sizes instead of a hang or a garbled gather.
    """
    _, size = world()
    if size == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    if any(int(s) != x.shape[0] for s in sizes):
        raise ValueError(f"gather_rows needs the same batch on every rank, got {[int(s) for s in sizes]}")
    return _GatherRows.apply(x)
