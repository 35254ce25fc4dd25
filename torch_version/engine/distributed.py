"""Several processes, one run: PyTorch's DistributedDataParallel, started by torchrun.

    torchrun --standalone --nproc_per_node=8 torch_version/train.py --dataset shakespeare   # 8 GPUs
    torchrun --standalone --nproc_per_node=2 torch_version/train.py --device cpu            # 2 CPU processes (gloo)
    python3 torch_version/train.py ...                                                      # one process: nothing here happens

torchrun starts the processes (ranks) and tells each its rank and the world size in environment
variables (RANK, LOCAL_RANK, WORLD_SIZE). Every rank holds the whole model and draws the same
global batch from the same CPU generator, then trains on its own slice of it; DDP adds up the
gradients across ranks during the backward pass (NCCL between GPUs, gloo between CPU processes),
so every rank takes the same optimizer step and the replicas stay equal. Rank 0 alone prints,
evaluates and writes checkpoints; the others wait for it at a barrier.

Why a slice of one global batch, and not a batch per rank from a generator per rank (as nanoGPT
does): the run then sees the same names, windows and masks whatever the number of ranks, so N
ranks repeat one process's run to float rounding (the gradients are summed in another order), and
a checkpoint resumes under torchrun or without it, in either direction.
"""
import os

import torch
import torch.distributed as dist


def world():
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup(device):
    """Join torchrun's process group (NCCL for CUDA, gloo for the CPU) and return this rank's device:
    a GPU per local rank on CUDA ('cuda' becomes 'cuda:<local rank>'); the same device elsewhere.
    A plain process (no torchrun) joins nothing and keeps its device."""
    rank, size, local = world()
    if size == 1:
        return device
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return device


def is_main():
    """True in rank 0, and in a plain process: the one that prints, evaluates and saves."""
    return world()[0] == 0


def rows(batch_size):
    """This rank's rows of a global batch: a slice, the ranks' slices in order cover it."""
    rank, size, _ = world()
    per = -(-batch_size // size)  # ceil: the last rank may hold fewer rows
    return slice(min(rank * per, batch_size), min((rank + 1) * per, batch_size))


def wrap(model, device):
    """The model as DDP trains it (its gradients summed across ranks in backward), or itself alone."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None)


def barrier():
    """Wait until every rank is here (rank 0 evaluating and saving, say); nothing in a plain process."""
    if dist.is_initialized():
        dist.barrier()


def sum_over_ranks(value):
    """A scalar tensor summed over the ranks (each holds its slice's share of the training loss)."""
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()
