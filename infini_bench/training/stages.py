"""The two stages the loop runs: what each one builds (tokenizer, data, model) before training starts."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from accelerate import PartialState
from transformers import AutoTokenizer

from ..data import text_corpus
from ..data.cache import Store
from ..data.corpus import expand_paths
from ..modeling import InfiniForCausalLM, load_infini
from ..modeling.checkpoint import check_checkpoint_dir
from ..tokenizer import train_bpe_tokenizer
from .batches import CopyFirst, PackedText, WithText
from .copy_data import CopySpans, ordinary_ids
from .loop import Setup
from .recipe import DataConfig, FinetuneRecipe, ModelConfig, Recipe, RecipeError

logger = logging.getLogger(__name__)


# --- pretraining ---------------------------------------------------------------------------------------------


def pretraining(recipe: Recipe) -> Callable[[PartialState], Setup]:
    def build(state: PartialState) -> Setup:
        out = Path(recipe.run.output_dir)
        with state.main_process_first():  # the main process trains the tokenizer and fills the cache once
            tokenizer = pretraining_tokenizer(recipe, out / "tokenizer")
            rows = packed_corpus(recipe.data, tokenizer, run_data(out, "run.output_dir"))
        model = initial_model(recipe.model, tokenizer, recipe.run.seed)
        if model.config.use_memory and recipe.data.sequence_length < model.config.segment_length:
            raise RecipeError(
                f"data.sequence_length={recipe.data.sequence_length} is shorter than one segment "
                f"(segment_length={model.config.segment_length} in {recipe.model.init_from!r})"
            )
        return Setup(model=model, tokenizer=tokenizer, data=corpus_batches(rows, recipe))

    return build


def corpus_batches(rows: np.ndarray, recipe: Recipe) -> PackedText:
    """The packed corpus as the loop's data: every step at the full length, or in `data.length_stages`."""
    if recipe.data.length_stages:
        from .extend import StagedText

        return StagedText(rows, recipe.run.seed, recipe.data.length_stages)
    return PackedText(rows, recipe.run.seed)


def documents(data: DataConfig) -> Iterator[str]:
    """The corpus as an iterator of documents, in a fixed order."""
    if data.source == "stdlib":
        from ..data.corpus import stdlib_files  # the train/eval split shared with the ppl_stdlib task

        docs = text_corpus.iter_file_documents(stdlib_files(split="train"))
    elif data.source == "files":
        docs = text_corpus.iter_file_documents(data_files(data), data.text_field)
    else:
        docs = text_corpus.iter_hub_documents(data.hub_name, data.hub_config, data.hub_split, data.text_field, data.streaming)
    return text_corpus.limit(docs, data.max_documents)


def pretraining_tokenizer(recipe: Recipe, saved: Path):
    """The recipe's tokenizer, else the starting checkpoint's, else a BPE trained on the corpus (saved in the
    output folder, so a resume, or another process, reads the very same one)."""
    name = recipe.data.tokenizer or recipe.model.init_from
    if name:
        try:
            return AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as err:
            key = "data.tokenizer" if recipe.data.tokenizer else "model.init_from"
            raise FileNotFoundError(f"{key}={name!r}: no tokenizer can be loaded from it ({err})") from None
    if (saved / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(saved)
    tokenizer = train_bpe_tokenizer(_first_chars(documents(recipe.data), recipe.data.tokenizer_train_chars), recipe.data.vocab_size)
    tokenizer.save_pretrained(saved)
    return tokenizer


def _first_chars(docs: Iterator[str], budget: int) -> Iterator[str]:
    for doc in docs:
        if budget <= 0:
            return
        yield doc[:budget]
        budget -= len(doc)


def data_files(data: DataConfig) -> list[Path]:
    """The files `data.paths` names (folders expanded), of the types the corpus reader reads."""
    return expand_paths(data.paths, what="data.paths", suffixes=text_corpus.FILE_SUFFIXES)


def run_data(out: Path, key: str, what: str = "the packed training data") -> Store:
    """A training run's own data cache: its output folder's data/ (the packed corpus, the retrieval examples), so a
    resumed run reads exactly what it started with. Write errors name `what` and the recipe `key` to change."""
    return Store(out / "data", what, f"choose a {key} on a disk with room (its data/ folder caches the training data)")


def packed_corpus(data: DataConfig, tokenizer, store: Store) -> np.ndarray:
    source = {k: v for k, v in vars(data).items() if k not in ("tokenizer", "vocab_size", "tokenizer_train_chars")}
    if data.source == "files":  # fail now, naming the path, rather than inside the cache builder
        source["files"] = [(str(p), p.stat().st_size, p.stat().st_mtime) for p in data_files(data)]
    return text_corpus.packed_rows(store, source, tokenizer, documents(data), data.sequence_length, data.max_tokens)


def initial_model(cfg: ModelConfig, tokenizer, seed: int) -> InfiniForCausalLM:
    """A fresh model sized by the recipe, or the recipe's `init_from` checkpoint (Llama ones converted)."""
    if cfg.init_from:
        check_checkpoint_dir(cfg.init_from)
        return load_infini(cfg.init_from, convert_llama=True)
    config = cfg.infini_config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return InfiniForCausalLM(config)


# --- retrieval finetuning (passkey, NIAH) -------------------------------------------------------------------------


def finetuning(full: Recipe, checkpoint: str | Path) -> Callable[[PartialState], Setup]:
    """The recipe's `finetune` stage; its `data` section is the corpus that `finetune.text_every` mixes in."""
    check_finetune_source(checkpoint)
    recipe: FinetuneRecipe = full.finetune

    def build(state: PartialState) -> Setup:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = load_infini(checkpoint)
        segment = model.config.segment_length
        niah = recipe.niah
        used = [("finetune.passkey.lengths", n) for n in recipe.passkey.lengths] + [
            ("finetune.niah.lengths", n) for v in niah.variants for n in niah.lengths_for(v, recipe.passkey.lengths)
        ]
        for where, length in used:
            if model.config.use_memory and length < segment:
                raise RecipeError(
                    f"{where} has {length}, shorter than one segment (segment_length={segment} "
                    f"in {str(checkpoint)!r}): the memory would never be used"
                )
        from .retrieval_data import retrieval_pools

        out, key = Path(recipe.run.output_dir), "finetune.run.output_dir"
        with state.main_process_first():
            examples = run_data(out, key, "the retrieval training examples")
            data = retrieval_pools(recipe.passkey, niah, tokenizer, recipe.run.seed, examples)
            if recipe.text_every:
                text = PackedText(packed_corpus(full.data, tokenizer, run_data(out, key)), recipe.run.seed)
                data = WithText(data, text, recipe.text_every)
            if recipe.copy_steps:
                data = CopyFirst(CopySpans(ordinary_ids(tokenizer), recipe.run.seed), data, recipe.copy_steps)
        return Setup(model=model, tokenizer=tokenizer, data=data,
                     fixed_lr=(recipe.copy_steps, recipe.copy_lr / recipe.optim.lr))

    return build


def check_finetune_source(checkpoint: str | Path) -> None:
    """`--from` must be an Infini checkpoint with a tokenizer; say which part is missing."""
    model_type = check_checkpoint_dir(checkpoint, ("infini", "llama"))
    if model_type == "llama":
        raise ValueError(
            f"--from {str(checkpoint)!r} is a Llama checkpoint: convert it first (infini-bench convert) or pretrain "
            "with model.init_from set to it"
        )
    if not any((Path(checkpoint) / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise FileNotFoundError(f"--from {str(checkpoint)!r} has no tokenizer files: finetuning takes its tokenizer")


__all__ = ["documents", "finetuning", "pretraining"]
