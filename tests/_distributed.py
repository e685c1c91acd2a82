"""Process-group helpers for the multi-process tests, so that worker processes exit cleanly.

A gloo group's worker threads release each finished collective a moment after the caller has its result.
If the interpreter starts shutting down inside that moment, the release needs the GIL of a finalizing
interpreter and the process aborts ("terminate called without an active exception", pytorch #190489).
``destroy_process_group`` prevents it by joining those threads, but only when nothing else still holds the
group: importing ``torch._dynamo`` (which torchmetrics and Lightning do) *after* the group exists leaves a
reference behind, and the threads then live until shutdown. Hence the two rules here:

* :func:`gloo_group` is for workers that make their own group. The package and torchmetrics are imported
  by this module, so before any group exists, and the group is destroyed when the block ends.
* :func:`leave_group_at_exit` is for processes whose group Lightning made (``ddp_spawn``), which Lightning
  never destroys: the group is destroyed at exit, before the interpreter starts to shut down.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
import torchmetrics  # noqa: F401 (imported before any group exists: see the module docstring)

import percep_lightning.metrics  # noqa: F401 (the same)


@contextmanager
def gloo_group(rank: int, world_size: int, init_file: str) -> Iterator[None]:
    """A gloo group of ``world_size`` processes met through ``init_file``, destroyed when the block ends."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _leave_group() -> None:
    if dist.is_initialized():
        gc.collect()  # the strategy's model wrapper, which holds the group, sits in reference cycles
        dist.destroy_process_group()


def leave_group_at_exit() -> None:
    """Destroy this process's default group when it exits, before interpreter shutdown (idempotent)."""
    atexit.unregister(_leave_group)
    atexit.register(_leave_group)
