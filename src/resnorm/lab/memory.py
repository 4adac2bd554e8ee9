"""The peak memory of a training step, one definition on every device.

``StepMemory(device)`` measures, between ``start()`` and ``stop()``, the largest amount of tensor
memory in use **above what was in use at** ``start()``: the activations a step saves for its backward
pass, its gradients and its temporaries — not the weights, optimizer state and data that were there
before. That is the part of training memory a change inside the model (a fused residual add, another
norm) can change; ``peak_bytes`` and ``peak_mib`` (2**20 bytes) hold the result.

- CUDA: ``torch.cuda.max_memory_allocated()`` after ``torch.cuda.reset_peak_memory_stats()``, minus
  ``torch.cuda.memory_allocated()`` at the start (the caching allocator's own count of the bytes of live
  tensors; its cached free blocks are not in it).
- CPU (and any other device): PyTorch keeps no such count, and the process's resident memory mixes
  tensors with the C allocator's cache, so the tracker counts tensors itself: a ``TorchDispatchMode``
  sees the outputs of every operator the step runs (forward, autograd's backward, the optimizer); an
  output that is a new storage (the operator's schema says it aliases no input: not a view, not an
  in-place result) adds its ``nbytes`` when it is created and gives them back when the storage is freed
  (``weakref.finalize``), and the running sum's maximum is the peak. Like the CUDA number it counts live
  tensor bytes; unlike it, no allocator rounding, and nothing a kernel allocates internally (scratch
  space) or that is created outside PyTorch's dispatcher.

The CPU tracker runs every operator through Python, so the step it measures is slower: measure one
step, and time the others.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["StepMemory", "TensorMemoryCounter", "MIB"]

MIB = 2**20


class TensorMemoryCounter(TorchDispatchMode):
    """Counts the bytes of the tensor storages created while it is active and still alive
    (``live_bytes``), and their maximum (``peak_bytes``); see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._alive: set[int] = set()
        self._creates: dict[Any, bool] = {}  # operator -> its outputs are new storages
        self.counting = True  # False: new storages are not counted (frees of counted ones still are)

    def _makes_new_storage(self, func: Any) -> bool:
        creates = self._creates.get(func)
        if creates is None:
            creates = all(r.alias_info is None for r in func._schema.returns)
            self._creates[func] = creates
        return creates

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.counting and self._makes_new_storage(func):
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor):
                    self._count(value.untyped_storage())
        return out

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self._alive:  # an operator that returns the same new storage twice
            return
        nbytes = storage.nbytes()
        self._alive.add(key)
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._freed, key, nbytes)

    def _freed(self, key: int, nbytes: int) -> None:
        if key in self._alive:
            self._alive.discard(key)
            self.live_bytes -= nbytes


class StepMemory:
    """Peak tensor memory above the starting point, between ``start()`` and ``stop()`` (module
    docstring). ``peak_bytes`` / ``peak_mib`` are None until ``stop()``."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self._counter: TensorMemoryCounter | None = None
        self._base = 0
        self._running = False

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / MIB

    def start(self) -> StepMemory:
        if self._running:
            raise RuntimeError("StepMemory.start() called twice")
        self._running = True
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._counter = TensorMemoryCounter()
            self._counter.__enter__()
        return self

    def stop(self) -> int | None:
        """End the measurement (idempotent); returns ``peak_bytes``."""
        if not self._running:
            return self.peak_bytes
        self._running = False
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.peak_bytes = self._counter.peak_bytes
            self._counter = None
        else:
            torch.cuda.synchronize(self.device)
            self.peak_bytes = max(0, torch.cuda.max_memory_allocated(self.device) - self._base)
        return self.peak_bytes

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave out what is created inside (on a CPU; the CUDA count cannot leave anything out)."""
        counter = self._counter
        if counter is None:
            yield
            return
        counter.counting = False
        try:
            yield
        finally:
            counter.counting = True

    def __enter__(self) -> StepMemory:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
