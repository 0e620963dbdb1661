"""``python -m tests.train.crash_run STEP CONFIG [key=value ...]``: ``covft train`` killed after STEP.

Stands in for a job killed mid-training in the resume tests: every process exits at once with
status 99 (``os._exit``: no cleanup, no final model) right after optimizer step STEP was logged
and, when one was due, checkpointed. Runs under ``accelerate launch`` as ``covft train`` does.
"""

from __future__ import annotations

import os
import sys

from torch import nn

from covft.train import TrainerCallback, train
from covft.train.config import load_config

EXIT_STATUS = 99


class CrashAfter(TrainerCallback):
    """Exit the process hard at the end of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        if step == self.step:
            os._exit(EXIT_STATUS)


def main(argv: list[str]) -> None:
    step, config, *overrides = argv
    train(load_config(config, overrides), callbacks=[CrashAfter(int(step))])


if __name__ == "__main__":
    main(sys.argv[1:])
