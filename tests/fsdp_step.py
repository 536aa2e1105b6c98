"""One training step of a tiny Infini model with torch's FSDP2 (`fully_shard`, one unit per decoder layer, as
recipes/accelerate/fsdp.yaml asks accelerate for), the trainer's optimizer groups and a memory that spans segments.

    torchrun --nproc_per_node 2 tests/fsdp_step.py OUT      # sharded over 2 CPU processes (gloo)
    python tests/fsdp_step.py OUT                            # the same step in one process, the whole batch

Writes OUT/rank<r>.pt (loss) and, on rank 0, OUT/initial.pt, OUT/grads.pt and OUT/weights.pt (the full
weights before the step, the gradients, and the weights after the step).
accelerate runs FSDP only on GPUs (on CPU processes it falls back to data parallelism), so the CPU test shards the
model with torch itself; `benchmarks/gpu_check.sh` runs the accelerate path on the GPU."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from infini_bench import InfiniConfig, InfiniForCausalLM
from infini_bench.training.optim import build_optimizer
from infini_bench.training.recipe import OptimConfig

BATCH, LENGTH = 4, 48  # three segments of 16: the memory is written and read


def main(out: Path) -> None:
    sharded = "WORLD_SIZE" in __import__("os").environ
    if sharded:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    torch.manual_seed(0)
    config = InfiniConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, segment_length=16, gate_init="randn",
                          memory_update="delta_l2", memory_conv_size=4)
    model = InfiniForCausalLM(config)
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "initial.pt")
    ids = torch.randint(0, 97, (BATCH, LENGTH))
    if sharded:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2, gate_lr=5e-2))
    rows = ids[rank * BATCH // world : (rank + 1) * BATCH // world]
    loss = model(rows, labels=rows).loss
    loss.backward()
    grads = {k: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
             for k, p in model.named_parameters()}
    optimizer.step()
    torch.save({"loss": loss.item()}, out / f"rank{rank}.pt")
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(state, out / "weights.pt")
        torch.save(grads, out / "grads.pt")
    if sharded:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
