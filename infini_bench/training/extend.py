"""Context extension of a full-attention model, as the context-extension guide does it: position interpolation
(`rope_type: linear`) or YaRN (`rope_type: yarn`) set once for the target length, then language-model finetuning on
long documents in a length schedule of stages (the guide's gradual 2× steps, e.g. 512 → 1k → 2k → 4k).

    infini-bench extend --config recipes/extend-yarn.yaml --from quickstart/baseline/llama

`--from` is a transformers Llama folder (ours or any HF Llama) or a full-attention Infini checkpoint (one segment,
no memory: the quickstart's baseline). The model trains as a memory-off Infini model with one segment over the
whole sequence, which is exactly a Llama (`infini_to_llama`), with the recipe's `model.rope_parameters` computed by
transformers' own RoPE functions; the run ends by writing `<run.output_dir>/llama`, a `LlamaForCausalLM` with that
RoPE that lm-eval's `hf` model evaluates. The recipe's other `model` keys are refused: the architecture is the
checkpoint's.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import PartialState
from transformers import AutoTokenizer, LlamaForCausalLM

from ..modeling import infini_to_llama, load_infini
from ..modeling.checkpoint import check_checkpoint_dir, llama_to_infini
from .batches import Batch, EpochOrder
from .loop import Setup
from .recipe import ModelConfig, Recipe, RecipeError

logger = logging.getLogger(__name__)
LLAMA_DIR = "llama"  # the extended model as a transformers Llama, inside run.output_dir
# The recipe keys an extension reads from `model`; everything else is the checkpoint's.
EXTEND_MODEL_KEYS = ("rope_parameters",)


class StagedText:
    """Packed corpus rows of the final length, fed in a length schedule: the run is cut into `len(lengths)`
    equal stages by `done` (how far it is through its schedule), and stage k trains on windows of `lengths[k]`
    tokens. Each packed row is split into row_length / length windows, so a stage reads the whole corpus (not the
    first tokens of each row); every stage keeps its own cursor and epoch order, so a resume is exact. A step is
    `size` windows: short stages are cheaper steps, as in the guide's progressive schedule."""

    def __init__(self, rows: np.ndarray, seed: int, lengths: list[int]):
        self.rows = rows
        self.lengths = list(lengths)
        self.orders = {n: EpochOrder(len(rows) * (rows.shape[1] // n), seed + i) for i, n in enumerate(self.lengths)}
        self.shortest = self.lengths[0]

    def length_at(self, done: float) -> int:
        return self.lengths[min(len(self.lengths) - 1, int(done * len(self.lengths)))]

    def global_batch(self, step: int, size: int, cursors: dict[str, int], done: float) -> Batch:
        length = self.length_at(done)
        per_row = self.rows.shape[1] // length
        key = f"text:{length}"
        start = cursors.get(key, 0)
        picks = [self.orders[length](start + i) for i in range(size)]
        cursors[key] = start + size
        windows = [self.rows[j // per_row, (j % per_row) * length:(j % per_row + 1) * length] for j in picks]
        ids = torch.from_numpy(np.stack(windows).astype(np.int64))
        return Batch(ids, ids.clone(), f"text_{length}")


def check_extend_recipe(recipe: Recipe) -> None:
    """What an extension needs beyond a valid recipe: `model.rope_parameters` (the scaled RoPE; transformers'
    types are checked by `InfiniConfig`) and no other model key (the architecture is the checkpoint's)."""
    if recipe.model.rope_parameters is None:
        raise RecipeError(
            "model.rope_parameters is not set: an extension needs the scaled RoPE, e.g. {rope_type: yarn, factor: 16, "
            "original_max_position_embeddings: 256}"
        )
    defaults = ModelConfig()
    changed = [f.name for f in dataclasses.fields(ModelConfig)
               if f.name not in EXTEND_MODEL_KEYS and getattr(recipe.model, f.name) != getattr(defaults, f.name)]
    if changed:
        raise RecipeError(
            f"model.{changed[0]} cannot be set in an extension: the model is --from's; only model.rope_parameters is read"
        )


def source_llama(checkpoint: str | Path) -> LlamaForCausalLM:
    """`--from` as a Llama: a Llama folder as it is, a full-attention Infini checkpoint exported (a memory model is
    refused: extending it by RoPE scaling would drop what its memory learnt)."""
    if check_checkpoint_dir(checkpoint, ("infini", "llama")) == "llama":
        return LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model = load_infini(checkpoint)
    if model.config.use_memory:
        raise ValueError(
            f"--from {str(checkpoint)!r} is an Infini model with its memory on: extend finetunes a full-attention model "
            "(a Llama folder, or a checkpoint trained with use_memory=false)"
        )
    return infini_to_llama(model)


def extended_model(llama: LlamaForCausalLM, rope: dict, length: int):
    """The Llama as a one-segment, memory-off Infini model with the recipe's RoPE. The source's `rope_theta` is
    kept unless the recipe gives one; `max_position_embeddings` becomes the target length."""
    rope = {"rope_theta": llama.config.rope_parameters.get("rope_theta", 10000.0), **rope}
    return llama_to_infini(llama, use_memory=False, segment_length=length, rope_parameters=rope,
                           max_position_embeddings=length)


def extension(recipe: Recipe, checkpoint: str | Path) -> Callable[[PartialState], Setup]:
    """The stage `infini-bench extend` trains: the recipe's corpus (`data`, packed at `data.sequence_length`, in
    `data.length_stages`) and `--from` with the recipe's RoPE."""
    from .stages import packed_corpus, run_data

    check_extend_recipe(recipe)
    lengths = recipe.data.length_stages or [recipe.data.sequence_length]

    def build(state: PartialState) -> Setup:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = extended_model(source_llama(checkpoint), dict(recipe.model.rope_parameters), lengths[-1])
        with state.main_process_first():
            rows = packed_corpus(recipe.data, tokenizer, run_data(Path(recipe.run.output_dir), "run.output_dir"))
        return Setup(model=model, tokenizer=tokenizer, data=StagedText(rows, recipe.run.seed, lengths))

    return build


def export_extended(final: Path, output_dir: Path) -> Path:
    """Write the final checkpoint as a transformers Llama (`<output_dir>/llama`, with its tokenizer)."""
    target = output_dir / LLAMA_DIR
    model = load_infini(final)
    infini_to_llama(model, max_position_embeddings=model.config.segment_length).save_pretrained(target)
    AutoTokenizer.from_pretrained(final).save_pretrained(target)
    return target


__all__ = ["StagedText", "check_extend_recipe", "export_extended", "extension"]
