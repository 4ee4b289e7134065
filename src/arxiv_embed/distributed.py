"""Data-parallel launches (``torchrun``, ``accelerate launch``): one process per device, one of them the main.

The launchers give every worker its place in the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``); a plain
``python stages/<name>.py`` has none and is a launch of one. Nothing starts at import: the process group is
started on first need by accelerate's ``PartialState`` (gloo on CPU, NCCL on CUDA), the same one the Hugging Face
Trainer then uses. The process that starts it also ends it at exit: Gloo's worker threads still running while
the interpreter shuts down abort the process ("terminate called without an active exception").
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def world_size() -> int:
    """Processes in the launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0 of a launch, and in a plain run: the one process that writes outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def on_main_process(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only and return its (picklable) result on every process.

    The other processes wait for it, so it can prepare files they read next. If ``fn`` raises, the main process
    exits and the launcher stops the others.
    """
    if world_size() == 1:
        return fn()
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # Without cpu=True accelerate treats a launch on a machine without a GPU as a single process.
    state = PartialState(cpu=not torch.cuda.is_available())
    atexit.unregister(_destroy_process_group)  # once, however many calls
    atexit.register(_destroy_process_group)
    box = [fn() if state.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return box[0]  # type: ignore[return-value]
