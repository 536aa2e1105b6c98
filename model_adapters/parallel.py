"""Data parallelism for `--model infini`: under `accelerate launch` (or `torchrun`) every process loads the model on
its own device and lm-eval hands each rank its share of the requests (it shards by `lm.rank` / `lm.world_size`);
results are gathered through these primitives. Nothing distributed is home-made: accelerate sets up the process
group (NCCL on GPUs, gloo on CPUs)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch


@dataclass
class DataParallel:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    accelerator: Any = None  # accelerate.Accelerator when world_size > 1

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.accelerator is None else self.accelerator.gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list | None:
        if self.accelerator is None:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def launched_world_size() -> int:
    """How many processes the launcher started (1 for a plain `python -m ...`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_data_parallel(device: torch.device) -> DataParallel:
    """One process: run on `device`. Several: one rank per process, each on the device accelerate gives it
    (cuda:LOCAL_RANK on GPUs; the CPU when `device` is the CPU)."""
    if launched_world_size() <= 1:
        return DataParallel(device=device)
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    accelerator = Accelerator(
        cpu=device.type == "cpu", kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))]
    )
    if accelerator.num_processes <= 1:  # launched, but accelerate saw a single process
        return DataParallel(device=device)
    return DataParallel(
        device=torch.device(accelerator.device),
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        accelerator=accelerator,
    )
