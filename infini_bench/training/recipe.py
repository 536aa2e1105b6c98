"""Recipes: the whole training setup as plain dataclasses, read from YAML.

A recipe file holds one pretraining stage (`model`, `data`, `optim`, `run`) and, optionally, a `finetune` stage
(`passkey`, `niah`, `optim`, `run`) that `infini-bench finetune --from <checkpoint>` runs. Unknown keys and values
of the wrong type are rejected with the dotted name of the key, so a typo never silently falls back to a default.
Command-line overrides use the same dotted names: `run.max_steps=100`, `finetune.optim.lr=1e-4`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ..data.niah import MAX_DIGITS as NIAH_MAX_DIGITS
from ..data.niah import VARIANTS as NIAH_VARIANTS
from ..data.niah import NiahSpec, niah_spec
from ..data.passkey import PasskeySpec, passkey_answer_tokens
from ..modeling.configuration_infini import InfiniConfig
from ..validation import as_whole


class RecipeError(ValueError):
    """A recipe (file or override) that cannot be used; the message names the key and the value."""


# --- the model section: InfiniConfig's own fields ----------------------------------------------------------------
# The recipe does not re-validate the model's settings: `check` builds an `InfiniConfig`, so the model's own
# validation names a bad value. `tests/test_train_recipe.py` checks that `ModelConfig` lists exactly InfiniConfig's
# fields (types and defaults included, but `MODEL_DEFAULTS`), so the two cannot drift apart.

# set from the tokenizer the stage uses, never by the recipe
FROM_TOKENIZER = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")
# where the recipe's default differs from InfiniConfig's: a model that trains in minutes on a CPU
MODEL_DEFAULTS = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "segment_length": 64}
MODEL_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass
class ModelConfig:
    """The Infini model trained from scratch: every `InfiniConfig` field except the vocabulary size and special
    token ids (taken from the tokenizer), with the recipe's small defaults (`MODEL_DEFAULTS`); ignored when
    finetuning (the checkpoint's config is used).

    `init_from` starts from an existing checkpoint instead: an Infini folder continues it, a Llama folder is
    converted (same weights, new gates: the paper's continued pretraining)."""

    init_from: Union[str, None] = None
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 1048576
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-06
    rope_theta: float | None = None
    rope_parameters: dict | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    segment_length: int = 64
    memory_update: str = "linear"
    memory_conv_size: int = 0
    use_memory: bool = True
    gate_activation: str = "sigmoid"
    gate_init: str | float = "zeros"
    memory_eps: float = 1e-06
    memory_kernel: str = "auto"

    def check(self, where: str) -> None:
        for name in MODEL_SIZES:  # sizes InfiniConfig takes on trust (a zero would fail deep inside torch)
            _count(f"{where}.{name}", getattr(self, name))
        try:
            self.infini_config()
        except ValueError as err:  # InfiniConfig's message starts with the field's name: prefix the section
            raise RecipeError(f"{where}.{err}") from None

    def infini_config(self, **from_tokenizer: Any) -> InfiniConfig:
        """The `InfiniConfig` this section describes (`vocab_size` and the special token ids from the tokenizer)."""
        settings = {k: v for k, v in vars(self).items() if k != "init_from"}
        return InfiniConfig(**settings, **from_tokenizer)


@dataclass
class DataConfig:
    """The pretraining corpus, tokenised and packed into sequences of `sequence_length` tokens.

    source: "stdlib" (the Python standard library's own source, training split only: `ppl_stdlib`'s evaluation
    files are never trained on), "files" (`paths`: .txt/.md/.rst/.py files, .jsonl, .parquet, or folders of them),
    or "hub" (`hub_name`, read with `datasets.load_dataset`, offline when the cache has it; e.g. `pg19` for long
    books when online).
    length_stages: a length schedule in stages (e.g. [512, 1024, 2048, 4096], the context-extension guide's
    gradual 2× steps): the run is cut into equal stages and stage k trains on windows of length_stages[k] tokens of
    the packed rows; the last equals `sequence_length` (empty: every step at `sequence_length`).
    tokenizer: a folder or hub name; None trains a byte-level BPE of `vocab_size` on the corpus (or, with
    `model.init_from`, takes the checkpoint's tokenizer)."""

    source: str = "stdlib"
    paths: list[str] = field(default_factory=list)
    text_field: str = "text"
    hub_name: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    streaming: bool = False
    max_documents: int | None = None
    max_tokens: int | None = None
    sequence_length: int = 256
    tokenizer: str | None = None
    vocab_size: int = 1024
    tokenizer_train_chars: int = 20_000_000
    length_stages: list[int] = field(default_factory=list)

    def check(self, where: str) -> None:
        _choice(f"{where}.source", self.source, ("stdlib", "files", "hub"))
        _count(f"{where}.sequence_length", self.sequence_length)
        self.check_stages(where)
        if self.source == "files" and not self.paths:
            raise RecipeError(f"{where}.paths is empty: source 'files' needs at least one file or folder")
        if self.source == "hub" and not self.hub_name:
            raise RecipeError(f"{where}.hub_name is not set: source 'hub' needs a dataset name")
        for name in ("max_documents", "max_tokens"):
            if getattr(self, name) is not None:
                _count(f"{where}.{name}", getattr(self, name))

    def check_stages(self, where: str) -> None:
        """`length_stages`: rising lengths, each dividing `sequence_length` (a packed row is cut into windows of
        the stage's length), the last equal to it."""
        stages = self.length_stages
        if not stages:
            return
        for i, length in enumerate(stages):
            _count(f"{where}.length_stages[{i}]", length)
            if self.sequence_length % length:
                raise RecipeError(f"{where}.length_stages[{i}]={length} does not divide {where}.sequence_length="
                                  f"{self.sequence_length}: each stage cuts the packed rows into windows of its length")
        if any(b <= a for a, b in zip(stages, stages[1:])):
            raise RecipeError(f"{where}.length_stages={stages!r} must rise stage by stage (e.g. [512, 1024, 2048])")
        if stages[-1] != self.sequence_length:
            raise RecipeError(f"{where}.length_stages ends at {stages[-1]}, not at {where}.sequence_length="
                              f"{self.sequence_length}: the last stage trains at the full length")


@dataclass
class PasskeyConfig:
    """Passkey finetuning data, built by the same builder the passkey tasks use, from training seeds only.

    `lengths`: context lengths in tokens; every optimizer step uses one length (all its sequences equal, no
    padding). `schedule`: "mix" cycles through `lengths` step by step; "ramp" adds the next length every
    `1/len(lengths)` of `max_steps` and then cycles through those unlocked (a curriculum over segments).
    `num_examples` examples are drawn per length and reused epoch after epoch.
    `loss_on`: "answer" (the passkey digits only) or "all" (every token).
    `haystacks`: the builder's haystack sources ("filler", "stdlib" prose, ...), cycled over the examples; the
    passkey tasks evaluate on "filler", other sources add variety to what the memory must learn to ignore.
    `answer_tokens`: the answer budget the passkey tasks reserve, so the prompt is exactly what lm-eval feeds at
    that length (length − answer_tokens tokens); the example is that prompt + key + "." (null: the tasks' own
    default, max(16, digits + 8))."""

    num_examples: int = 2000
    lengths: list[int] = field(default_factory=lambda: [1024])
    schedule: str = "mix"
    digits: int = 5
    seed: int = 0
    loss_on: str = "answer"
    haystacks: list[str] = field(default_factory=lambda: ["filler"])
    answer_tokens: int | None = None

    @property
    def answer_budget(self) -> int:
        return self.answer_tokens if self.answer_tokens is not None else passkey_answer_tokens(self.digits)

    def spec(self, index: int) -> PasskeySpec:
        """The builder's spec of example `index` (its haystack cycles through `haystacks`)."""
        return PasskeySpec(n_digits=self.digits, answer_tokens=self.answer_budget,
                           haystack=self.haystacks[index % len(self.haystacks)])

    def check(self, where: str) -> None:
        _count(f"{where}.num_examples", self.num_examples)
        _count(f"{where}.digits", self.digits)
        _choice(f"{where}.schedule", self.schedule, ("mix", "ramp"))
        _choice(f"{where}.loss_on", self.loss_on, ("answer", "all"))
        if not self.lengths:
            raise RecipeError(f"{where}.lengths is empty: give at least one context length in tokens")
        for i, length in enumerate(self.lengths):
            _count(f"{where}.lengths[{i}]", length)
        if self.answer_tokens is not None and self.answer_tokens < self.digits + 2:
            raise RecipeError(
                f"{where}.answer_tokens={self.answer_tokens!r} cannot hold a space, {self.digits} digits and the '.'"
            )
        if not self.haystacks:
            raise RecipeError(f"{where}.haystacks is empty: give at least one haystack source (e.g. filler)")
        if self.seed < 0:
            raise RecipeError(f"{where}.seed={self.seed!r} must be >= 0")


@dataclass
class NiahTrainConfig:
    """NIAH finetuning data (RULER's variants), built by the same builder the `niah_<variant>_<len>` tasks use,
    from training seeds only; off while `variants` is empty.

    `variants`: RULER's variant names (single_1, multikey_1, ...). `num_examples` examples per variant and length.
    `lengths`: null (the passkey lengths, for every variant), a list (every variant), or a mapping variant ->
    lengths (a variant with several needles needs longer prompts: the builder refuses lengths that cannot hold
    them). Each example is the task's prompt at that length with the task's defaults (the variant's haystack,
    `answer_tokens` null = the task's `default_answer_tokens`), then the answer the scorer wants and its end.
    `answer_tokens` may also be a list, cycled over the examples: an Infini model sees where the prompt ends inside
    its last segment, and the tasks' budget grows with the length (16 tokens up to 512, then 1/32 of the length, up
    to 128), so a model trained at one budget meets another layout at longer lengths.
    A length's steps cycle through the families that have a pool there (passkey, then the variants in order).
    `n_digits`: digits of the needle values (RULER's 7, the tasks' default). `loss_on`: "answer" or "all"."""

    variants: list[str] = field(default_factory=list)
    num_examples: int = 1000
    lengths: list[int] | dict[str, list[int]] | None = None
    n_digits: int = 7
    seed: int = 0
    loss_on: str = "answer"
    answer_tokens: int | list[int] | None = None

    def budget(self, index: int) -> int | None:
        """The answer budget of example `index` (None: the task's default at the example's length)."""
        if isinstance(self.answer_tokens, list):
            return self.answer_tokens[index % len(self.answer_tokens)]
        return self.answer_tokens

    def spec(self, variant: str, index: int) -> NiahSpec:
        """The builder's spec of `variant`'s example `index`: the task's defaults (the variant's haystack,
        `default_answer_tokens` unless `answer_tokens`), with the recipe's digits."""
        return niah_spec(variant, n_digits=self.n_digits, answer_tokens=self.budget(index))

    def lengths_for(self, variant: str, passkey_lengths: list[int]) -> list[int]:
        """The context lengths `variant` trains at."""
        if self.lengths is None:
            return list(passkey_lengths)
        return list(self.lengths[variant] if isinstance(self.lengths, dict) else self.lengths)

    def check(self, where: str) -> None:
        for i, variant in enumerate(self.variants):
            if variant not in NIAH_VARIANTS:
                raise RecipeError(
                    f"{where}.variants[{i}]={variant!r} is unknown: choose among {', '.join(NIAH_VARIANTS)}"
                )
        if len(set(self.variants)) != len(self.variants):
            raise RecipeError(f"{where}.variants={self.variants!r} names a variant twice")
        _count(f"{where}.num_examples", self.num_examples)
        _count(f"{where}.n_digits", self.n_digits)
        if self.n_digits > NIAH_MAX_DIGITS:
            raise RecipeError(f"{where}.n_digits={self.n_digits!r} must be <= {NIAH_MAX_DIGITS} (the NIAH builder's limit)")
        _choice(f"{where}.loss_on", self.loss_on, ("answer", "all"))
        if self.seed < 0:
            raise RecipeError(f"{where}.seed={self.seed!r} must be >= 0")
        if isinstance(self.answer_tokens, list):
            if not self.answer_tokens:
                raise RecipeError(f"{where}.answer_tokens is empty: give budgets, one number, or null")
            for i, budget in enumerate(self.answer_tokens):
                _count(f"{where}.answer_tokens[{i}]", budget)
        elif self.answer_tokens is not None:
            _count(f"{where}.answer_tokens", self.answer_tokens)
        if isinstance(self.lengths, dict):
            for variant in self.lengths:
                if variant not in self.variants:
                    raise RecipeError(
                        f"{where}.lengths.{variant} names a variant that is not in {where}.variants={self.variants!r}"
                    )
            for variant in self.variants:
                if variant not in self.lengths:
                    raise RecipeError(
                        f"{where}.lengths has no entry for variant {variant!r} (a mapping needs one per variant)"
                    )
        groups = self.lengths.items() if isinstance(self.lengths, dict) else [(None, self.lengths or [])]
        for variant, lengths in groups:
            name = f"{where}.lengths" + (f".{variant}" if variant else "")
            if variant is not None and not lengths:
                raise RecipeError(f"{name} is empty: give at least one context length in tokens")
            for i, length in enumerate(lengths):
                _count(f"{name}[{i}]", length)
        if isinstance(self.lengths, list) and not self.lengths:
            raise RecipeError(f"{where}.lengths is empty: give lengths, or null for the passkey lengths")


@dataclass
class OptimConfig:
    """AdamW with three parameter groups (decayed matrices; norms and biases without decay; gates with their own
    learning rate and no decay), linear warmup then cosine decay to `min_lr` (the gate rate follows the same
    curve, scaled by gate_lr / lr). `batch_size` is the global number of sequences per optimizer step: gradient
    accumulation = batch_size / (micro_batch_size × processes), so a recipe gives the same training on any
    number of processes.
    `skip_non_finite`: a step whose loss or gradient norm is NaN or infinite is never applied; 0 (the default) stops
    the run there, N drops up to N such steps in a row (logged as `skipped`) and stops at the next one."""

    lr: float = 3e-4
    min_lr: float = 3e-5
    gate_lr: float = 1e-2
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    batch_size: int = 8
    micro_batch_size: int = 1
    detach_every: int = 0
    skip_non_finite: int = 0

    def check(self, where: str) -> None:
        for name in ("lr", "gate_lr"):
            _above_zero(f"{where}.{name}", getattr(self, name))
        for name in ("batch_size", "micro_batch_size"):
            _count(f"{where}.{name}", getattr(self, name))
        for name in ("min_lr", "weight_decay", "warmup_steps", "max_grad_norm", "detach_every", "eps", "skip_non_finite"):
            if getattr(self, name) < 0:
                raise RecipeError(f"{where}.{name}={getattr(self, name)!r} must be >= 0")
        if self.min_lr > self.lr:
            raise RecipeError(f"{where}.min_lr={self.min_lr!r} is above {where}.lr={self.lr!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise RecipeError(f"{where}.betas={self.betas!r} must be two numbers in [0, 1)")


@dataclass
class RunConfig:
    """Where and how long: stop at `max_steps` or after `max_minutes` of training (whichever first, both counted
    across resumes); checkpoint every `save_every` steps and at the end; log every `log_every` steps. The
    learning-rate decay and the length curriculum run over the same horizon: whichever of the two is nearer its
    end sets how far along they are, so a run stopped by its time budget still ends its curriculum and decay.
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32".
    keep_checkpoints: how many of the newest checkpoints to keep (0 keeps all).
    cpu_threads: torch's CPU thread count per process (null: torch's default). Small models on a busy machine
    often run several times faster with 1 thread than with threads that wait for each other."""

    output_dir: str = "runs/train"
    max_steps: int = 1000
    max_minutes: float | None = None
    save_every: int = 100
    log_every: int = 10
    seed: int = 0
    precision: str = "auto"
    keep_checkpoints: int = 0
    cpu_threads: int | None = None

    def check(self, where: str) -> None:
        if self.cpu_threads is not None:
            _count(f"{where}.cpu_threads", self.cpu_threads)
        for name in ("max_steps", "save_every", "log_every"):
            _count(f"{where}.{name}", getattr(self, name))
        if self.max_minutes is not None:
            _above_zero(f"{where}.max_minutes", self.max_minutes)
        if self.keep_checkpoints < 0:
            raise RecipeError(f"{where}.keep_checkpoints={self.keep_checkpoints!r} must be >= 0 (0 keeps all)")
        _choice(f"{where}.precision", self.precision, ("auto", "bf16", "fp32"))


@dataclass
class FinetuneRecipe:
    """The retrieval finetuning stage: passkey (and, with `niah.variants`, NIAH) examples from the tasks' own
    builders, the model and tokenizer from `--from`.

    `text_every`: every k-th optimizer step trains on a batch of the recipe's `data` corpus (causal LM loss on every
    token) instead of retrieval examples, so finetuning on answer digits does not erase language modelling (0: never).

    `copy_steps`: the first k optimizer steps train in-context copying instead (random spans repeated after a gap;
    `copy_data.py` says why), at the constant learning rate `copy_lr` (the other groups scaled alike), then
    retrieval starts on the schedule (0: none).
    """

    passkey: PasskeyConfig = field(default_factory=PasskeyConfig)
    niah: NiahTrainConfig = field(default_factory=NiahTrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/finetune"))
    text_every: int = 0
    copy_steps: int = 0
    copy_lr: float = 1e-3

    def check(self, where: str) -> None:
        if self.copy_steps < 0:
            raise RecipeError(f"{where}.copy_steps={self.copy_steps!r} must be a whole number >= 0 (0: no copy steps)")
        _above_zero(f"{where}.copy_lr", self.copy_lr)
        if self.text_every < 0 or self.text_every == 1:
            raise RecipeError(
                f"{where}.text_every={self.text_every!r} is invalid: 0 (never) or k >= 2 (every k-th step is text)"
            )
        self.passkey.check(f"{where}.passkey")
        self.niah.check(f"{where}.niah")
        self.optim.check(f"{where}.optim")
        self.run.check(f"{where}.run")


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    finetune: FinetuneRecipe | None = None

    def check(self) -> "Recipe":
        self.model.check("model")
        self.data.check("data")
        self.optim.check("optim")
        self.run.check("run")
        if self.model.use_memory and self.data.sequence_length < self.model.segment_length and self.model.init_from is None:
            raise RecipeError(
                f"data.sequence_length={self.data.sequence_length} is shorter than one segment "
                f"(model.segment_length={self.model.segment_length}): the memory would never be used"
            )
        if self.finetune is not None:
            self.finetune.check("finetune")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- loading -------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe (None: all defaults), apply `key=value` overrides, and check every value."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"recipe {str(path)!r} must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return from_dict(Recipe, raw, "").check()


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b.c=value` with `value` parsed as YAML (so `100` is an int, `[1, 2]` a list, `null` None)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {item!r} is not of the form section.key=value (e.g. run.max_steps=100)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, raw: Any, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrongly typed values by name."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where or 'recipe'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise RecipeError(f"unknown recipe key {key!r}; known keys{' in ' + where if where else ''}: {sorted(names)}")
    values = {name: _coerce(hints[name], raw[name], f"{where}.{name}" if where else name) for name in raw}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [option for option in options if option is not type(None)]
        if len(real) == 1:  # `X | None`: X's own error names the inner key
            return _coerce(real[0], value, where)
        for option in real:
            try:
                return _coerce(option, value, where)
            except RecipeError:
                pass
        raise RecipeError(f"{where}={value!r} has the wrong type: expected {_type_name(hint)}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is dict:  # a free-form mapping (model.rope_parameters): the model's own config checks its keys
        if not isinstance(value, dict):
            raise RecipeError(f"{where}={value!r} has the wrong type: expected a mapping")
        return dict(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}={value!r} has the wrong type: expected a mapping ({_type_name(hint)})")
        key_hint, item = typing.get_args(hint)
        return {_coerce(key_hint, k, f"{where}.{k}"): _coerce(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}={value!r} has the wrong type: expected a list ({_type_name(hint)})")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this loader does not know
        raise TypeError(f"recipe field {where} has unsupported type {hint!r}")
    raise RecipeError(f"{where}={value!r} has the wrong type: expected {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)


def _choice(where: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise RecipeError(f"{where}={value!r} is unknown: choose one of {options}")


def _count(where: str, value: Any) -> None:
    """A count or size: a whole number >= 1 by the project's one rule (`validation.as_whole`), named by its key."""
    if as_whole(value, 1) is None:
        raise RecipeError(f"{where}={value!r} must be > 0")


def _above_zero(where: str, value: float) -> None:
    """A rate or a time: any number above zero."""
    if value <= 0:
        raise RecipeError(f"{where}={value!r} must be > 0")


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
