"""DDP plumbing for ``torchrun``: one process per device, a GLOBAL contrastive batch.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here
degrades to a single process. Embeddings are gathered WITH gradient
(``torch.distributed.nn.functional.all_gather``), so each rank's loss sees every
rank's negatives; since all ranks compute the same loss and DDP averages the
gradients, the update equals a single process's at the same global batch.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather

from vopstore import core


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if there is one (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def default_device(info: DistInfo) -> str:
    """The device this rank trains on: its local GPU, else the CPU."""
    return core.default_device(info.local_rank)


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping the autograd graph."""
    if not info.enabled:
        return x

    with warnings.catch_warnings():
        # torch 2.13 marks it deprecated in favour of a private module; it is still the public,
        # documented autograd-aware gather, and the DDP test checks its gradients.
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(x), dim=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Send a picklable object from rank 0 to every rank (e.g. the registered ref)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
