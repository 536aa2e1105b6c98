"""`infini-bench inspect`: what an Infini checkpoint's gates learnt (g = act(β) per layer and query head, counted
as memory-only, local-only and mixers by `infini_bench.reports.gates`) and, on one document, how much of each
layer's attention output comes from memory (`memory_share`)."""
