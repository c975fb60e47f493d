"""A DeepSpeed ZeRO checkpoint merged by DeepSpeed's own `zero_to_fp32`, without running its pickles.

`python -m shipyard.intake.zero SRC OUT MAX_SHARD_BYTES RENAMES_JSON` runs in a child
process of the watcher (the merge holds the whole fp32 model in memory; the
child gives it back when done). DeepSpeed's loader calls
`torch.load(weights_only=False)`, which would run whatever a checkpoint's
pickles name, so this process forces `weights_only=True` for every load
(`TORCH_FORCE_WEIGHTS_ONLY_LOAD`) and allows only the few DeepSpeed classes its
checkpoints hold. The merged state dict is written like any converted one
(`shipyard.intake.convert.write_model`: the config's names, tied weights once, the
config's dtype) into OUT, which already holds config.json. Exit 3: DeepSpeed
is not installed. Called by `shipyard.intake.convert`.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

NOT_INSTALLED = 3


def main(src: Path, out: Path, max_shard_bytes: int, renames: list[tuple[str, str]]) -> int:
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # both set is an error in torch
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # read by torch.load at each call
    import torch

    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError as exc:
        print(f"DeepSpeed ZeRO checkpoints need deepspeed installed ({exc}); or set convert.command")
        return NOT_INSTALLED
    from shipyard.intake.convert import CONVERTER, StateDict, write_model

    torch.serialization.add_safe_globals([LossScaler, ZeroStageEnum, fragment_address])
    state = get_fp32_state_dict_from_zero_checkpoint(str(src.parent), tag=src.name)
    write_model(StateDict(state), out, renames, max_shard_bytes, src)
    (out / CONVERTER).write_text(f"deepspeed {version('deepspeed')} zero_to_fp32 (weights_only)")
    return 0


if __name__ == "__main__":
    renames = [(pattern, replacement) for pattern, replacement in json.loads(sys.argv[4])]
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), renames))
