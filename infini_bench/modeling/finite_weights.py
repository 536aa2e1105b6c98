"""Refuse a checkpoint whose weights hold NaN or infinite values, naming the tensor and its file.

A checkpoint with one NaN matrix loads without complaint and then answers nothing: evaluated, it printed a normal
table of 0 % scores, indistinguishable from a model whose memory fails. So the weight files are read tensor by
tensor (safetensors through its memory map; `.bin` files memory-mapped by torch) before the model is built, and
the first non-finite tensor stops the load. Reading a file a second time costs little next to building the
model from it (the page cache serves the second read).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch


class NonFiniteWeightsError(ValueError):
    """A checkpoint tensor holds NaN or infinite values; the message names the tensor and the file."""


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder: a single file, or the shards its index names."""
    folder = Path(folder)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
    return []


def _tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
    else:
        yield from torch.load(path, map_location="cpu", mmap=True, weights_only=True).items()


def _count_non_finite(tensor: torch.Tensor) -> tuple[int, int]:
    """(NaNs, infinities) in a floating-point tensor, counted in slices so a large one is never copied whole."""
    flat = tensor.reshape(-1)
    nans = infs = 0
    for start in range(0, flat.numel(), 1 << 24):
        part = flat[start : start + (1 << 24)]
        nans += int(torch.isnan(part).sum())
        infs += int(torch.isinf(part).sum())
    return nans, infs


def check_finite_weights(folder: str | Path) -> None:
    """Raise `NonFiniteWeightsError` at the first tensor of the folder's weight files that is not all finite."""
    for path in weight_files(folder):
        for name, tensor in _tensors(path):
            if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
                continue
            nans, infs = _count_non_finite(tensor)
            what = " and ".join(f"{n:,} {kind}" for n, kind in ((nans, "NaN"), (infs, "infinite")) if n)
            raise NonFiniteWeightsError(
                f"tensor {name} in {str(path)!r} holds {what} value(s) of {tensor.numel():,}: the checkpoint is "
                "broken (a diverged training or a damaged conversion) and would score 0 % without saying why; "
                "evaluate an earlier checkpoint"
            )
