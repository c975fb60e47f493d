"""Bench: converting torch DCP checkpoints of ~0.5B and ~1.5B parameters to safetensors, against the floor and a peer.

Writes a Llama's bf16 weights as a DCP checkpoint with torch's own writer (four
data files, as four writer threads make them; `.metadata` last), then, each in
a fresh child process so peak RSS is its own:

- ours: `shipyard.intake.convert.convert("dcp", …)` (safe metadata, a batch of
  tensors read while the one before is written, safetensors shards written as
  tensors arrive), timed after transformers' imports and one meta model of
  the architecture, which a running watcher has paid once;
- the peer: `torch.distributed.checkpoint.format_utils.dcp_to_torch_save`
  then `safetensors.torch.save_file` of what it saved (the documented way);
- the floors: reading the DCP files once (`cat > /dev/null`), copying them
  through user space (`dd bs=64M`, read and write once, as any conversion
  must), and `cp -r` (which copies inside the kernel).

Medians of 3, page cache warm. Run: `.venv/bin/python bench/convert.py [0.5 1.5]`
(about 5 minutes).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from scale import llama, timed  # bench/ is on sys.path: the script's own directory

SIZES = ("0.5", "1.5")  # of bench/scale.py's Llamas
OURS = """
import sys, time
from pathlib import Path
from shipyard.intake.convert import convert
from shipyard.intake.validation import expected_tensors
expected_tensors(Path(sys.argv[2]))  # a running watcher has imported transformers and built this architecture once
start = time.perf_counter()
convert("dcp", Path(sys.argv[1]), [Path(sys.argv[2])], Path(sys.argv[3]))
print(time.perf_counter() - start)
"""
PEER = """
import sys, time
import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
start = time.perf_counter()
dcp_to_torch_save(sys.argv[1], sys.argv[2] + ".pt")
state = torch.load(sys.argv[2] + ".pt", weights_only=True)
save_file({k: v.contiguous() for k, v in state.items()}, sys.argv[2] + ".safetensors")
print(time.perf_counter() - start)
"""


def make_dcp(out: Path, size: str) -> tuple[int, Path]:
    """A bf16 Llama as DCP under out/dcp, its config under out/hf; its parameter count."""
    import torch.distributed.checkpoint as dcp

    config, shapes = llama(size)
    config.save_pretrained(out / "hf")
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=generator, dtype=torch.bfloat16) for k, s in shapes.items()}
    writer = dcp.FileSystemWriter(str(out / "dcp"), thread_count=4)
    dcp.save(state, storage_writer=writer, no_dist=True)
    return sum(t.numel() for t in state.values()), out / "dcp"


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp_dir:
        tmp = Path(tmp_dir)
        for size in sys.argv[1:] or SIZES:
            params, dcp_dir = make_dcp(tmp / size, size)
            files = sorted(str(p) for p in dcp_dir.iterdir())
            ours, ours_rss, peer, peer_rss, read, copy, dd = [], [], [], [], [], [], []
            for i in range(3):
                _, rss, out = timed(
                    [sys.executable, "-c", OURS, str(dcp_dir), str(tmp / size / "hf"), str(tmp / f"o{i}")]
                )
                ours, ours_rss = [*ours, float(out)], [*ours_rss, rss]
                _, rss, out = timed([sys.executable, "-c", PEER, str(dcp_dir), str(tmp / f"p{i}")])
                peer, peer_rss = [*peer, float(out)], [*peer_rss, rss]
                read.append(timed(["sh", "-c", f"cat {' '.join(files)} > /dev/null"])[0])
                copy.append(timed(["cp", "-r", str(dcp_dir), str(tmp / f"c{i}")])[0])
                through = " && ".join(f"dd if={f} of={tmp}/dd bs=64M status=none" for f in files)
                dd.append(timed(["sh", "-c", f"{through} && rm {tmp}/dd"])[0])
                for name in (f"o{i}", f"c{i}"):
                    shutil.rmtree(tmp / name)
                for suffix in (".pt", ".safetensors"):
                    (tmp / f"p{i}{suffix}").unlink()
            results[size] = {
                "parameters": params,
                "bytes": sum(Path(f).stat().st_size for f in files),
                "convert_s": round(statistics.median(ours), 2),
                "convert_peak_rss_MB": round(statistics.median(ours_rss)),
                "peer_s": round(statistics.median(peer), 2),
                "peer_peak_rss_MB": round(statistics.median(peer_rss)),
                "read_once_s": round(statistics.median(read), 2),
                "cp_s": round(statistics.median(copy), 2),
                "dd_s": round(statistics.median(dd), 2),
            }
            print(json.dumps({size: results[size]}), flush=True)
            shutil.rmtree(tmp / size)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
