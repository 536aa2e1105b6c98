"""The Infini-attention causal LM (docs/ARCHITECTURE.md §2), registered with transformers' Auto classes."""
from transformers import AutoConfig, AutoModelForCausalLM

from .checkpoint import convert_llama_checkpoint, infini_to_llama, llama_to_infini, load_infini
from .configuration_infini import InfiniConfig
from .memory import InfiniCache
from .modeling_infini import InfiniForCausalLM, InfiniModel
from .static_cache import InfiniStaticCache

AutoConfig.register("infini", InfiniConfig, exist_ok=True)
AutoModelForCausalLM.register(InfiniConfig, InfiniForCausalLM, exist_ok=True)

__all__ = [
    "InfiniConfig",
    "InfiniForCausalLM",
    "InfiniModel",
    "InfiniCache",
    "InfiniStaticCache",
    "convert_llama_checkpoint",
    "infini_to_llama",
    "llama_to_infini",
    "load_infini",
]
