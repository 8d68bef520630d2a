"""Distributed training utilities: one process per device, gloo on CPU, nccl on CUDA.

Two ways to start:
  * `torchrun --nproc_per_node=N train.py ...` (any number of nodes): the standard environment
    variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are read;
  * `train.py --ngpus=N` (one node): `spawn(fn, N, ...)` starts N processes with
    torch.multiprocessing and sets those variables itself.

The global batch is split evenly: each process loads `global_batch // world_size` samples.
BatchNorm statistics are global across processes (`convert_sync_batchnorm`): torch's SyncBatchNorm
on CUDA, `AllReduceBatchNorm` (below) on CPU/gloo, where SyncBatchNorm is unavailable. A run on N
processes therefore computes the same update as one process with the same global batch.
"""
from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistInfo:
    """Where this process sits in the job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(cpu: bool, gpu_ids: Sequence[int]) -> DistInfo:
    """Join the process group described by the environment (or run alone if there is none).

    CUDA processes use `gpu_ids[local_rank]` (all visible devices if `gpu_ids` is empty) and nccl;
    CPU processes use gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (not cpu) and torch.cuda.is_available()
    if use_cuda:
        ids = list(gpu_ids) or list(range(torch.cuda.device_count()))
        if local_rank >= len(ids):
            raise RuntimeError(f"process with LOCAL_RANK={local_rank} has no GPU: only {len(ids)} "
                               f"GPU id(s) given ({ids})")
        device = torch.device(f"cuda:{ids[local_rank]}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = None
    if world_size > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            kwargs = {"device_id": device} if use_cuda else {}
            dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                    world_size=world_size, **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                    backend=backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _spawn_entry(local_rank: int, fn: Callable, world_size: int, port: int, args: tuple) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank),
                       "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    fn(*args)


class SpawnedProcessFailed(RuntimeError):
    """A spawned process exited with a non-zero status (it reported its error itself)."""

    def __init__(self, rank: int, exit_code: int):
        super().__init__(f"process {rank} exited with status {exit_code}")
        self.rank, self.exit_code = rank, exit_code


def spawn(fn: Callable, nprocs: int, args: tuple = ()) -> None:
    """Run `fn(*args)` in `nprocs` fresh processes forming one group on this node.

    A process that exits with a non-zero status (e.g. `SystemExit(2)` after logging a user
    error) raises `SpawnedProcessFailed`; an uncaught exception keeps torch's report (its
    traceback: a bug)."""
    import torch.multiprocessing as mp
    port = find_free_port()
    try:
        mp.spawn(_spawn_entry, args=(fn, nprocs, port, args), nprocs=nprocs, join=True)
    except mp.ProcessExitedException as e:
        raise SpawnedProcessFailed(e.error_index, e.exit_code) from None


# --- reductions -------------------------------------------------------------------------------

def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def barrier() -> None:
    if is_dist():
        dist.barrier()


def _comm_device() -> torch.device:
    """The device collectives of the current backend need (nccl: the current CUDA device)."""
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a copy on the input's device). Identity in a single process."""
    out = tensor.detach().clone()
    if is_dist():
        comm = out.to(_comm_device())
        dist.all_reduce(comm, op=dist.ReduceOp.SUM)
        out = comm.to(tensor.device)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(tensor) / get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank."""
    if not is_dist():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


# --- seeds ------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    seed = int(seed) % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def process_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Distinct, reproducible seed per (run seed, rank, epoch)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + int(rank) * 104_729) % (2 ** 31)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader workers: seed numpy/python from the worker's torch seed (set by the loader's
    seeded generator), so augmentations are reproducible and differ between workers."""
    seed = torch.initial_seed() % (2 ** 32)
    np.random.seed(seed)
    random.seed(seed)


# --- BatchNorm across processes -----------------------------------------------------------------

class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are summed over all processes (any backend, CPU too).

    Forward in training mode all-reduces (sum x, sum x^2, count) with autograd, so gradients flow
    through the global statistics as in torch.nn.SyncBatchNorm. In eval mode, or in a single
    process, it is a plain BatchNorm. Every process must call forward in training mode equally
    often (the trainer guarantees this: only the gradient step runs the model in train mode).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_dist()):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or not self.track_running_stats,
                                self.momentum if self.momentum is not None else 0.0, self.eps)
        from torch.distributed.nn.functional import all_reduce
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([float(x.numel() // x.shape[1])], dtype=xf.dtype, device=x.device)
        stats = torch.cat([xf.sum(dim=dims), (xf * xf).sum(dim=dims), count])
        stats = all_reduce(stats, op=dist.ReduceOp.SUM)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm layer compute global statistics across processes."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_allreduce_bn(module)


def _convert_allreduce_bn(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, AllReduceBatchNorm):
        out = AllReduceBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert_allreduce_bn(child))
    return out
