"""The model's named choices, in a module that imports nothing: `infini-bench convert --help` lists them without
loading torch (the `modeling` package imports torch and transformers, ~4 s on a cold start).
`configuration_infini` re-exports them and validates against them."""
from __future__ import annotations

MEMORY_UPDATES = ("linear", "delta", "delta_l2", "gated_delta")
GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "tanh", "orig_tanh", "tanh_abs")
GATE_INITS = ("zeros", "randn")
