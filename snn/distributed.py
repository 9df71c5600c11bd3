"""Data-parallel training under ``torchrun``: one process per device, one process group.

``torchrun --nproc_per_node=N train.py ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment; :func:`setup` joins them into one process group (NCCL on
CUDA, gloo on the CPU) and gives each its device. A plain ``python train.py`` sees no
``WORLD_SIZE`` and gets :data:`SINGLE`: nothing here then does any work.

How the work is split (``snn.training``): each epoch's shuffled order (the same on every rank,
from the seed) is cut into global batches of ``batch_size x world`` samples, and rank r takes the
r-th slice of each, so N ranks x batch b see exactly the samples one process x batch N*b would;
``DistributedDataParallel`` averages the gradients, so the updates agree to fp32 reduction order.
The test set is split the same way and the correct counts are summed. Only rank 0 writes
checkpoints (from the unwrapped module), metrics and progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (in place); itself when there is one process."""
        if self.enabled:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def max_parameter_difference(self, module: torch.nn.Module) -> float:
        """Largest |difference| between this rank's parameters and rank 0's, over all ranks."""
        if not self.enabled:
            return 0.0
        flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()])
        reference = flat.clone()
        dist.broadcast(reference, src=0)
        difference = (flat - reference).abs().max()
        dist.all_reduce(difference, op=dist.ReduceOp.MAX)
        return difference.item()


SINGLE = World()


def setup(device_choice: str) -> tuple[World, torch.device | None]:
    """Join the process group when launched by torchrun; returns the world and its device (None:
    decide as for a single process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE, None
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_choice in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return world, torch.device("cuda", world.local_rank) if use_cuda else torch.device("cpu")


def teardown(world: World) -> None:
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: slice | torch.Tensor, world: World):
    """Rank ``world.rank``'s part of one global batch (as even as possible; every rank gets one)."""
    if not world.enabled:
        return batch
    return torch.tensor_split(batch, world.size)[world.rank]
