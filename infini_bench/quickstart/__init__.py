"""`infini-bench quickstart`: the whole product on a laptop, no GPU and no network (and a larger model on a GPU).

train a tiny Infini model (pretraining, then passkey and NIAH finetuning) → the same recipe for a full-attention baseline
(one segment, no memory, exported as a transformers Llama) → that baseline extended by YaRN to the longest evaluated
length (`infini-bench extend`, what users pick instead of a memory) → lm-eval on the passkey / NIAH (single and
multikey) grid at 1×–16× the finetuning length and `ppl_stdlib`, for the Infini model, its memory-off control, the
Llama and the YaRN Llama (both `--model hf`) → the report, which warns when either Llama control fails at its own
finetuning length. With CUDA the GPU profile trains a larger model in the same budget and evaluates to
64× (`Profile`, `select_profile`). Every stage is an ordinary command a user could type; the commands are printed,
saved to `commands.sh`, and a finished stage is recorded with its inputs (options, recipe contents, upstream
outputs, profile), so a second run (or one after Ctrl-C) picks up where it stopped and reruns exactly the stages
whose inputs changed. The quickstart empties only folders it marked as its own; a non-empty `--out` it did not make is refused.

The package: profiles.py (CPU / GPU), plan.py (the stages and their commands: where a stage is added), records.py
(marker files, quickstart_stages.json, staleness), runner.py (the two lanes that run the stages), cli.py (`main`).
"""
from .cli import main, run
from .plan import MULTIKEY_VARIANT, QuickstartError, Stage, plan, retrieval_tasks
from .profiles import CPU, GPU, GPU_RECIPE, RECIPE, Profile, select_profile
from .records import MARKER

__all__ = ["CPU", "GPU", "GPU_RECIPE", "MARKER", "MULTIKEY_VARIANT", "Profile", "QuickstartError", "RECIPE", "Stage",
           "main", "plan", "retrieval_tasks", "run", "select_profile"]
