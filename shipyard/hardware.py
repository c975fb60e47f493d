"""Which accelerator this process trains and evaluates on: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch


def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"
