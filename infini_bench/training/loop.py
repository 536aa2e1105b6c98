"""The training loop: one optimizer step = one global batch of full multi-segment sequences.

Every sequence goes through the model in one call, so the loss of the last segment backpropagates through the
memory into every earlier segment (truncated every `detach_every` segments when set). `accelerate` carries the
same loop from one CPU to many GPUs (DDP or FSDP) and handles bf16 autocast; nothing distributed is home-made.

The shape (litgpt's pretrain.py): `train` guards the output folder (resume mode, lock) and calls `fit`, which
builds the stage, resumes it (`resume_from`) and loops over named steps: `train_step` (one optimizer step over the
micro-batches), `log_step` (one JSONL record) and `save_checkpoint`. The learning rate comes from the scheduler
(`optim.lr_factor`: warmup, then cosine to a floor). There is no validation split (the lm-eval tasks evaluate); a
finetuning ends by comparing its answer loss on trained-on and held-out retrieval examples (`check_held_out`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

from ..modeling.attention import gate_values
from ..modeling.checkpoint import check_weight_files
from .batches import (
    Batch, CopyFirst, PackedText, RetrievalPools, WithText, rank_micro_batches, retrieval_part,
)
from .checkpoint import (
    ACCELERATE_DIR,
    STATE_FILE,
    CheckpointError,
    OutputDirInUse,
    acquire_lock,
    latest_checkpoint,
    list_checkpoints,
    release_lock,
    save_atomically,
)
from .finite import NonFiniteError, first_non_finite_parameter, json_safe, non_finite_step, step_message, weights_message
from .held_out import pool_fits, write_report
from .optim import build_optimizer, build_scheduler
from .recipe import OptimConfig, RecipeError, RunConfig

logger = logging.getLogger(__name__)
LOG_FILE = "log.jsonl"


@dataclass
class Setup:
    """What a stage trains: built once per process (data inside `main_process_first`, so caches are shared)."""

    model: torch.nn.Module
    tokenizer: object
    data: PackedText | RetrievalPools | WithText | CopyFirst
    # (n, f): the first n optimizer steps run at f times the base rates, not the schedule (finetuning's copy steps)
    fixed_lr: tuple[int, float] = (0, 1.0)


@dataclass
class Progress:
    """The data position and counters, saved with every checkpoint (registered with accelerate)."""

    step: int = 0
    cursors: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0
    skipped: int = 0  # steps dropped as non-finite (`optim.skip_non_finite`), over the whole run

    def state_dict(self) -> dict:
        return {"step": self.step, "cursors": dict(self.cursors), "tokens": self.tokens, "seconds": self.seconds,
                "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.cursors = state["step"], dict(state["cursors"])
        self.tokens, self.seconds = state["tokens"], state["seconds"]
        self.skipped = state.get("skipped", 0)  # checkpoints written before the count existed


@dataclass
class Clock:
    """How far a run is through its schedules (the learning-rate decay, the length curriculum), from 0 to 1: the
    share of `max_steps` done or, in a run with `max_minutes`, the share of that budget spent when it is further
    along. Steps alone left a time-limited run part-way through both: the CPU quickstart's finetuning stopped at
    step 1,730 of 2,400, its 256-token stage began only in its last 130 steps and the learning rate ended at 2.7×
    its floor. `spent` is the slowest process's training seconds (all processes then choose the same batches)."""

    run: RunConfig
    spent: float = 0.0

    def done(self, step: int) -> float:
        share = step / self.run.max_steps
        if self.run.max_minutes is not None:
            share = max(share, self.spent / (60 * self.run.max_minutes))
        return min(1.0, share)

    def out_of_time(self) -> bool:
        return self.run.max_minutes is not None and self.spent >= 60 * self.run.max_minutes

    def read(self, progress: Progress, accelerator: Accelerator) -> None:
        """Take the training seconds of `progress`, the slowest process's. Only a time budget uses them, so a run
        without one skips this (a reduce is a device sync every step), as does a single process."""
        if self.run.max_minutes is None:
            return
        if accelerator.num_processes == 1:
            self.spent = progress.seconds
            return
        spent = torch.tensor(progress.seconds, device=accelerator.device)
        self.spent = accelerator.reduce(spent, "max").item()


@dataclass
class StepResult:
    """What one optimizer step leaves for the log: the summed micro-batch losses (this process), the gradient
    norm before clipping, and the learning rate of each parameter group during the step."""

    loss_sum: torch.Tensor
    grad_norm: torch.Tensor | float
    lrs: dict[str, float]
    non_finite: str | None = None  # what was not finite (the update was then not applied), else None


@dataclass
class Window:
    """Since the last log line: tokens and seconds (the logged tokens/s), and per batch source the summed step
    losses (this process, kept on the device until the log line) and steps. Every family's curve is then logged:
    with `log_every` a multiple of the source cycle, the logged step alone would show one family only."""

    tokens: int = 0
    seconds: float = 0.0
    loss_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, loss_sum: torch.Tensor) -> None:
        self.loss_sums[source] = self.loss_sums.get(source, 0) + loss_sum
        self.steps[source] = self.steps.get(source, 0) + 1


def make_accelerator(run: RunConfig, setup: Setup) -> Accelerator:
    """The accelerator for this stage, made once its model and data are built: DDP must be told when a step can
    leave parameters without a gradient (`may_leave_parameters_unused`), or it fails at step 2."""
    precision = run.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    ddp = DistributedDataParallelKwargs(find_unused_parameters=may_leave_parameters_unused(setup.model, setup.data.shortest))
    # cpu=True without CUDA: under torchrun, accelerate then runs gloo data parallelism (MULTI_CPU) instead of
    # silently treating each process as a lone run.
    return Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision="bf16" if precision == "bf16" else "no", kwargs_handlers=[ddp]
    )


def may_leave_parameters_unused(model: torch.nn.Module, shortest: int) -> bool:
    """A memory-off model (the full-attention baseline) never uses its gates; a sequence of one segment or less
    never reads what it writes into the memory (delta_l2's write strength then gets no gradient)."""
    return not model.config.use_memory or shortest <= model.config.segment_length


def process_state() -> PartialState:
    """This process's place in the run (rank, main process, the process group), before any model exists.

    accelerate shards with FSDP only on GPUs: launched with an FSDP config on a machine without one, it would run
    plain data parallelism over gloo and say nothing, so that is refused here, before any work."""
    if not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise ValueError(
            "this run was launched with an FSDP config (ACCELERATE_USE_FSDP=true), but accelerate shards with FSDP "
            "only on GPUs and this machine has none: launch with `accelerate launch --multi_gpu --num_processes N` "
            "for data parallelism over CPU processes, or run on GPUs"
        )
    return PartialState(cpu=not torch.cuda.is_available())


def train(
    optim: OptimConfig,
    run: RunConfig,
    build: Callable[[PartialState], Setup],
    recipe_yaml: str,
    resume: str = "auto",
    output_key: str = "run.output_dir",
) -> Path:
    """Run (or resume) one stage; returns the final checkpoint folder.

    resume: "auto" continues from the newest checkpoint in `run.output_dir` when there is one; "always" requires
    one; "never" requires the folder to hold none (so nothing is overwritten). A checkpoint that cannot be loaded
    is skipped with a warning for the newest one before it that can. The folder is locked while training
    (`training.lock`); `output_key` names it in messages."""
    out = Path(run.output_dir)
    previous = latest_checkpoint(out)
    if resume == "always" and previous is None:
        raise FileNotFoundError(f"--resume: output folder {str(out)!r} holds no checkpoint to resume from")
    if resume == "never" and previous is not None:
        raise FileExistsError(
            f"output folder {str(out)!r} already holds checkpoints (newest {previous.name}); resume it (the default) "
            f"or choose another {output_key}"
        )
    state = process_state()
    lock = None
    refusal = None
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        try:  # one training per folder: a second one would interleave the log
            lock = acquire_lock(out, output_key)
        except OutputDirInUse as err:
            refusal = str(err)
    if state.num_processes > 1:  # every process of a refused launch stops with the main one's sentence, none hangs
        from accelerate.utils import broadcast_object_list

        refusal = broadcast_object_list([refusal])[0]
    if refusal is not None:
        raise OutputDirInUse(refusal)
    try:
        return fit(optim, run, build, recipe_yaml, state, previous, output_key)
    finally:
        if lock is not None:
            release_lock(lock)


def fit(
    optim: OptimConfig,
    run: RunConfig,
    build: Callable[[PartialState], Setup],
    recipe_yaml: str,
    state: PartialState,
    previous: Path | None,
    output_key: str,
) -> Path:
    """Build the stage, resume it from `previous` (when given), train to `max_steps` or `max_minutes`, saving every
    `save_every` steps and at the end; returns the final checkpoint folder."""
    out = Path(run.output_dir)
    prepare_process(run)
    setup = build(state)
    accelerator = make_accelerator(run, setup)
    accumulation = accumulation_steps(optim, accelerator.num_processes)
    optimizer = build_optimizer(setup.model, optim)
    clock = Clock(run)
    scheduler = build_scheduler(optimizer, optim, run.max_steps, clock.done, setup.fixed_lr)
    model, optimizer = accelerator.prepare(setup.model, optimizer)
    progress = Progress()
    accelerator.register_for_checkpointing(scheduler, progress)
    if previous is not None:
        resume_from(accelerator, setup.model, previous, out, output_key, progress)

    def checkpoint() -> Path:
        bad = first_non_finite_parameter(accelerator, model)
        if bad is not None:  # never saved, so `latest` stays on the last good checkpoint
            raise NonFiniteError(weights_message(progress.step, bad, out))
        return save_checkpoint(accelerator, model, setup.tokenizer, progress, optim, run, recipe_yaml)

    bar = tqdm(total=run.max_steps, initial=progress.step, disable=not accelerator.is_main_process, desc="train")
    window = Window()
    last_saved = progress.step if previous is not None else -1
    clock.read(progress, accelerator)
    streak = 0  # non-finite steps in a row
    while progress.step < run.max_steps and not clock.out_of_time():
        t0 = time.perf_counter()
        batch = setup.data.global_batch(progress.step, optim.batch_size, progress.cursors, clock.done(progress.step))
        result = train_step(accelerator, model, optimizer, batch, optim, accumulation)
        seconds, tokens = time.perf_counter() - t0, batch.input_ids.numel()
        progress.step += 1
        progress.tokens += tokens
        progress.seconds += seconds
        clock.read(progress, accelerator)
        scheduler.step()  # the next step's learning rate, from the clock after this one
        window.tokens += tokens
        window.seconds += seconds
        if result.non_finite is None:
            streak = 0
            window.add(batch.source, result.loss_sum)
        else:
            streak += 1
            if streak > optim.skip_non_finite:
                bar.close()
                prefix = output_key.removesuffix("run.output_dir")
                raise NonFiniteError(step_message(
                    progress.step, batch.source, result.non_finite, out, prefix, streak, optim.skip_non_finite
                ))
            progress.skipped += 1
            logger.warning("step %d (%s batch): %s; the step was skipped (%d skipped so far)",
                           progress.step, batch.source, result.non_finite, progress.skipped)
        if progress.step % run.log_every == 0 or progress.step == run.max_steps:
            log_step(accelerator, model, out, progress, batch, result, accumulation, window, bar, clock)
            window = Window()
        bar.update(1)
        if progress.step % run.save_every == 0:
            checkpoint()
            last_saved = progress.step
    bar.close()
    final = checkpoint() if last_saved != progress.step else out / f"checkpoint-{progress.step:06d}"
    check_held_out(accelerator, model, setup, progress, optim, out)
    accelerator.wait_for_everyone()
    return final


def check_held_out(accelerator: Accelerator, model: torch.nn.Module, setup: Setup, progress: Progress,
                   optim: OptimConfig, out: Path) -> None:
    """A finetuning's last word: per retrieval pool, the answer loss on examples it trained on against held-out
    ones (`training.held_out`), logged and written to `held_out.json`; a warning for a pool learnt by heart."""
    pools = retrieval_part(setup.data)
    if pools is None or not pools.held_out:
        return
    with accelerator.autocast():
        fits = pool_fits(model, pools, progress.cursors, optim.micro_batch_size, accelerator.device)
    if accelerator.is_main_process:
        write_report(fits, out, progress.step)


def prepare_process(run: RunConfig) -> None:
    """Seed every generator and set the CPU's thread count and denormal handling, before anything is built."""
    set_seed(run.seed)
    if run.cpu_threads is not None:
        torch.set_num_threads(run.cpu_threads)
    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)  # denormal floats in the memory make CPU training ~5x slower


def accumulation_steps(optim: OptimConfig, world: int) -> int:
    """Micro-batches per process and optimizer step, so the global batch is `optim.batch_size` on any number of
    processes."""
    per_step = optim.micro_batch_size * world
    if optim.batch_size % per_step:
        raise RecipeError(
            f"optim.batch_size={optim.batch_size} is not a multiple of optim.micro_batch_size={optim.micro_batch_size} "
            f"x {world} processes"
        )
    return optim.batch_size // per_step


def train_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    optim: OptimConfig,
    accumulation: int,
) -> StepResult:
    """One optimizer step: this process's micro-batches of the global batch, forward and backward (gradients
    all-reduced once, after the last), clipping and the update."""
    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    micro_batches = rank_micro_batches(batch, optim.micro_batch_size, accelerator.num_processes, accelerator.process_index)
    for i, micro in enumerate(micro_batches):
        sync = i == len(micro_batches) - 1  # all-reduce gradients once, after the last micro-batch
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            loss = model(
                micro.input_ids.to(accelerator.device),
                labels=micro.labels.to(accelerator.device),
                detach_every=optim.detach_every,
            ).loss
            accelerator.backward(loss / accumulation)
        loss_sum += loss.detach()
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), optim.max_grad_norm or float("inf"))
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    problem = non_finite_step(accelerator, loss_sum, grad_norm)
    if problem is None:  # a NaN gradient would poison every weight and the optimizer's moments
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum, grad_norm, lrs, problem)


def log_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    out: Path,
    progress: Progress,
    batch: Batch,
    result: StepResult,
    accumulation: int,
    window: Window,
    bar: tqdm,
    clock: Clock,
) -> dict:
    """One line of `log.jsonl` (main process) and the progress bar's figures; the loss is averaged over processes
    (a collective: every process calls this at the same steps). Returns the record."""
    loss = accelerator.reduce(result.loss_sum / accumulation, "mean").item()
    # every process saw the same sources (the global batch is a function of the step), so the reduces line up
    losses = {source: accelerator.reduce(total / (accumulation * window.steps[source]), "mean").item()
              for source, total in sorted(window.loss_sums.items())}
    record = {
        "step": progress.step,
        "loss": loss,
        "source": batch.source,
        "losses": losses,  # per source, the mean over the window's steps of that source
        "lr": result.lrs.get("decay", result.lrs.get("no_decay")),
        "gate_lr": result.lrs.get("gates"),
        "grad_norm": float(result.grad_norm),
        "tokens_per_s": window.tokens / max(window.seconds, 1e-9),
        "seq_len": batch.input_ids.shape[1],
        "tokens": progress.tokens,
        "seconds": round(progress.seconds, 3),
        "done": round(clock.done(progress.step), 4),  # through the schedule (steps or time budget), 0 to 1
        "gates": gate_statistics(accelerator.unwrap_model(model)),
        "skipped": progress.skipped,  # non-finite steps dropped so far (optim.skip_non_finite)
    }
    record = json_safe(record)  # strict JSON: a non-finite value is null (a skipped step's loss), never NaN
    if accelerator.is_main_process:
        with open(out / LOG_FILE, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        shown = "n/a" if record["loss"] is None else f"{record['loss']:.4f}"
        bar.set_postfix(loss=shown, lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
    return record


def save_checkpoint(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer,
    progress: Progress,
    optim: OptimConfig,
    run: RunConfig,
    recipe_yaml: str,
) -> Path:
    """Write `checkpoint-<step>` atomically: accelerate's state (optimizer, scheduler, RNG, `progress`) for resume,
    plus an ordinary `save_pretrained` folder (weights, config, tokenizer), the recipe and the trainer state; point
    `latest` at it and keep the newest `run.keep_checkpoints`."""
    out = Path(run.output_dir)

    def write(folder: Path) -> None:
        accelerator.save_state(str(folder / ACCELERATE_DIR))
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(folder, state_dict=state_dict)
            tokenizer.save_pretrained(folder)
            (folder / "recipe.yaml").write_text(recipe_yaml)
            state = {**progress.state_dict(), "processes": accelerator.num_processes, "batch_size": optim.batch_size,
                     "distributed": accelerator.distributed_type.value}
            (folder / STATE_FILE).write_text(json.dumps(state, indent=1))

    return save_atomically(
        out, progress.step, write, accelerator.is_main_process, accelerator.wait_for_everyone, run.keep_checkpoints
    )


def resume_from(
    accelerator: Accelerator, model: torch.nn.Module, previous: Path, out: Path, key: str, progress: Progress
) -> Path:
    """Continue from the newest checkpoint in `out` that loads (model, optimizer, scheduler, RNG and `progress`,
    through accelerate), after checking it is this model's; drop log lines written after it."""
    _check_same_model(previous, model, out, key)
    resumed = _load_newest_intact(accelerator, out, key)
    _truncate_log(out / LOG_FILE, progress.step, accelerator.is_main_process)
    accelerator.print(f"resumed from {resumed} at step {progress.step}")
    return resumed


def gate_statistics(model: torch.nn.Module) -> list[dict[str, float]]:
    """Per layer, mean/min/max over heads of the gate g = act(β): near 0 the layer ignores its memory."""
    stats = []
    activation = model.config.gate_activation
    for layer in model.model.layers:
        beta = layer.self_attn.gate.detach()
        if hasattr(beta, "full_tensor"):  # FSDP2 shards parameters as DTensors
            beta = beta.full_tensor()
        g = gate_values(beta.float(), activation)
        stats.append({"mean": g.mean().item(), "min": g.min().item(), "max": g.max().item()})
    return stats


# config fields that make a checkpoint another model: resuming it with a different value cannot work (or would
# silently train something else)
MODEL_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "segment_length", "memory_update", "memory_conv_size", "use_memory",
    "tie_word_embeddings",
)


def _check_same_model(previous: Path, model: torch.nn.Module, out: Path, key: str) -> None:
    """Refuse to resume checkpoints of another model (another size, say) in the same output folder."""
    try:
        old = json.loads((previous / "config.json").read_text())
    except (OSError, ValueError):
        return  # unreadable: the loader below decides whether the checkpoint is damaged
    new = model.config.to_dict()
    differ = [f"{k}={old[k]!r} there, {new[k]!r} here" for k in MODEL_FIELDS if k in old and k in new and old[k] != new[k]]
    if differ:
        raise RecipeError(
            f"{key} {str(out)!r} holds checkpoints of another model ({'; '.join(differ)}): a training resumes only "
            f"its own checkpoints; choose another {key}, or move {str(out)!r} away to start over"
        )


def _load_newest_intact(accelerator: Accelerator, out: Path, key: str) -> Path:
    """Load the newest checkpoint whose state loads; warn about each newer one that does not (left in place: the
    training saves that step again when it gets there)."""
    damaged: list[str] = []
    for checkpoint in reversed(list_checkpoints(out)):
        try:
            check_weight_files(checkpoint)  # the exported weights users load must be whole too
            accelerator.load_state(str(checkpoint / ACCELERATE_DIR))
        except Exception as err:  # noqa: BLE001  a damaged file raises anything from EOFError to RuntimeError
            damaged.append(f"{checkpoint} ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})")
            continue
        if damaged:
            logger.warning(
                "resuming from %s, the newest intact checkpoint: %s could not be loaded (damaged; left in place until "
                "the training saves that step again)", checkpoint.name, "; ".join(damaged),
            )
        return checkpoint
    raise CheckpointError(
        f"no checkpoint in {key} {str(out)!r} can be loaded: {'; '.join(damaged)}; move the damaged checkpoints away "
        f"(or choose another {key}) to start over"
    )


def _truncate_log(path: Path, step: int, is_main: bool) -> None:
    """Drop log lines written after the checkpoint we resume from (a crash leaves them), so the log stays one
    curve with one line per step."""
    if not is_main or not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


__all__ = [
    "Progress", "Setup", "fit", "gate_statistics", "list_checkpoints", "log_step", "make_accelerator", "resume_from",
    "save_checkpoint", "train", "train_step",
]
