"""A run's training time across resumes, kept in its checkpoints.

A long run may be interrupted (its machine stopped) and resumed later, maybe with another
number of threads. Timing only the last process would record the last part of such a run as its
whole cost, so the clock's reading goes into every checkpoint and a resumed run starts from it.
Work done after an interrupted part's last checkpoint is redone on resume and counted once.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback


class TrainingClock(Callback):
    """Seconds of fitting (``fit_s``) and thread-seconds (``thread_s``: seconds x torch threads,
    the cost of parts run with different thread counts in one unit), summed over every part of
    the run up to now. ``earlier_fit_s``/``earlier_thread_s`` are the parts before this process."""

    def __init__(self) -> None:
        self.earlier_fit_s = 0.0
        self.earlier_thread_s = 0.0
        self.start = time.perf_counter()

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        # Before Lightning restores the checkpoint (load_state_dict): this process's part starts here.
        self.start = time.perf_counter()

    def this_part_s(self) -> float:
        return time.perf_counter() - self.start

    def state_dict(self) -> dict[str, float]:
        part = self.this_part_s()
        return {"fit_s": self.earlier_fit_s + part, "thread_s": self.earlier_thread_s + part * torch.get_num_threads()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_fit_s = float(state_dict.get("fit_s", 0.0))
        self.earlier_thread_s = float(state_dict.get("thread_s", 0.0))
