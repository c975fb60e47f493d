"""Deltas between safetensors files: rebuilt byte for byte, smaller than the file, refused when they do not fit."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from shipyard.errors import LedgerError
from shipyard.registry import deltas


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(512, 64, generator=g).to(torch.bfloat16),
        "layer.0.weight": torch.randn(64, 64, generator=g),
        "layer.0.bias": torch.zeros(64),
        "norm.weight": torch.ones(64, dtype=torch.float16),
    }


def stepped(before: dict[str, torch.Tensor], share: float, seed: int = 1) -> dict[str, torch.Tensor]:
    """An RL-like step: a small share of elements move by a little, the rest keep their bits."""
    g = torch.Generator().manual_seed(seed)
    after = {}
    for name, t in before.items():
        moved = torch.rand(t.shape, generator=g) < share
        after[name] = torch.where(moved, t + 0.01 * torch.randn(t.shape, generator=g).to(t.dtype), t).contiguous()
    return after


def roundtrip(tmp_path: Path, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> tuple[int, int]:
    save_file(before, tmp_path / "base.safetensors", metadata={"format": "pt"})
    save_file(after, tmp_path / "new.safetensors", metadata={"format": "pt"})
    assert deltas.encode(tmp_path / "base.safetensors", tmp_path / "new.safetensors", tmp_path / "delta")
    deltas.apply(tmp_path / "base.safetensors", tmp_path / "delta", tmp_path / "rebuilt.safetensors")
    assert (tmp_path / "rebuilt.safetensors").read_bytes() == (tmp_path / "new.safetensors").read_bytes()
    return (tmp_path / "delta").stat().st_size, (tmp_path / "new.safetensors").stat().st_size


def test_a_sparse_step_is_rebuilt_byte_for_byte_from_a_delta_a_fraction_of_the_file(tmp_path: Path) -> None:
    before = weights()
    delta, full = roundtrip(tmp_path, before, stepped(before, 0.01))
    assert delta < 0.1 * full, (delta, full)
    same, _ = roundtrip(tmp_path, before, before)
    assert same < 1024  # nothing changed: the header and a record per tensor


def test_new_removed_reshaped_and_retyped_tensors_are_carried_whole(tmp_path: Path) -> None:
    before = weights()
    after = stepped(before, 0.5)
    del after["norm.weight"]
    after["layer.0.weight"] = after["layer.0.weight"].reshape(32, 128).contiguous()
    after["layer.0.bias"] = after["layer.0.bias"].to(torch.bfloat16)
    after["lm_head.weight"] = torch.randn(512, 64)
    roundtrip(tmp_path, before, after)


def test_a_delta_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    before = weights()
    roundtrip(tmp_path, before, stepped(before, 0.05))
    data = bytearray((tmp_path / "delta").read_bytes())
    cut = tmp_path / "cut"
    cut.write_bytes(bytes(data[:-10]))
    with pytest.raises(LedgerError, match="truncated"):
        deltas.apply(tmp_path / "base.safetensors", cut, tmp_path / "out")
    save_file(weights(seed=7) | {"embed.weight": torch.zeros(8, 8)}, tmp_path / "other.safetensors")
    with pytest.raises(LedgerError, match=r"embed\.weight is not in"):
        deltas.apply(tmp_path / "other.safetensors", tmp_path / "delta", tmp_path / "out")
    (tmp_path / "junk").write_bytes(b"not a delta at all")
    with pytest.raises(LedgerError, match="not a Shipyard delta"):
        deltas.apply(tmp_path / "base.safetensors", tmp_path / "junk", tmp_path / "out")
    (tmp_path / "config.json").write_text("{}")
    assert not deltas.encode(tmp_path / "config.json", tmp_path / "new.safetensors", tmp_path / "none")
