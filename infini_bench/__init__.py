"""infini-bench: long-context benchmarks for lm-evaluation-harness, and the Infini-attention model they test."""
from .modeling import InfiniConfig, InfiniForCausalLM, InfiniModel, InfiniCache, load_infini

__version__ = "0.1.0"
__all__ = ["InfiniConfig", "InfiniForCausalLM", "InfiniModel", "InfiniCache", "load_infini", "__version__"]
