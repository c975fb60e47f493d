"""Quiet the ML libraries' own logging and progress bars, so a command shows one progress display of its own."""

from __future__ import annotations

import logging
import os
import warnings

import datasets
from transformers.utils import logging as hf_logging


def quiet_libraries() -> None:
    # TRL's reference-log-prob pass draws a tqdm bar that only this switch turns off.
    os.environ.setdefault("TQDM_DISABLE", "1")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    for name in ("trl", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(trl|transformers|torch|peft)\.")
