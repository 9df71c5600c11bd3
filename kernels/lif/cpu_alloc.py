"""The output allocator of the fused CPU LIF: reuses large output storages (:class:`OutputCache`)."""

from __future__ import annotations

import os
import sys
import threading

import torch

from snn.errors import UserError

# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------

LARGE_OUTPUT_BYTES = 32 << 20  # glibc's largest mmap threshold on 64-bit (see OutputCache)


# The storage's reference count (private API, present in the pinned torch; without it nothing is cached).
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


# Python references to a cached storage that only the cache holds, as seen inside OutputCache._free:
# the cache's list, the caller's loop variable, _free's argument and getrefcount's own argument.
_CACHE_ONLY_REFS = 4


class OutputCache:
    """Reuses the storage of large outputs (spikes, h, grad_x) once nothing else holds it.

    On Linux, glibc serves every allocation above 32 MiB with a fresh mapping and returns it to the
    OS when it is freed, so each large output's first write page-faults and zeroes every 4 KiB
    page: at the large benchmark shape that is ~27 ms for a 67 MB output against ~7 ms for the
    LIF itself, on every call. Smaller outputs are usually served from heap memory that is already
    mapped, so only outputs of ``LARGE_OUTPUT_BYTES`` or more are cached. A cached storage is handed
    out again only when the cache's reference is its last one (no tensor, view, numpy array or
    autograd graph still uses it), which is what PyTorch's CUDA caching allocator does for every
    tensor. It holds at most ``limit_bytes`` (``$SNN_OUTPUT_CACHE_MB``, default 1024; 0 switches
    it off); :func:`empty_output_cache` frees what is not in use.

    (Asking for transparent huge pages instead was measured too: medians 2-4x better, but on this
    VM a call of 0.2-1 s every 5-15 calls in forward+backward loops, so no better on average.)
    """

    def __init__(self, limit_bytes: int | None = None):
        self._limit_bytes = limit_bytes  # None: read $SNN_OUTPUT_CACHE_MB at first use
        self._storages: list[torch.UntypedStorage] = []
        self._lock = threading.Lock()

    @property
    def limit_bytes(self) -> int:
        if self._limit_bytes is None:
            self._limit_bytes = output_cache_limit_from_environment()
        return self._limit_bytes

    @limit_bytes.setter
    def limit_bytes(self, value: int) -> None:
        self._limit_bytes = value

    @staticmethod
    def _free(storage: torch.UntypedStorage) -> bool:
        """Nothing but the cache can reach ``storage``: no tensor (or view, numpy array, graph) holds its
        memory, and no Python name holds the storage object itself. Both counts are needed: PyTorch
        keeps one Python object per storage, so ``out.untyped_storage()`` returns the very object the
        cache holds, which adds a Python reference but no storage use."""
        return _storage_use_count(storage._cdata) == 1 and sys.getrefcount(storage) <= _CACHE_ONLY_REFS

    def storage(self, nbytes: int) -> torch.UntypedStorage:
        """A storage of ``nbytes`` (callers ask for ``LARGE_OUTPUT_BYTES`` or more): a cached one nobody
        uses, else a new one, kept when the limit allows."""
        if self.limit_bytes <= 0 or _storage_use_count is None:
            return torch.UntypedStorage(nbytes)
        with self._lock:
            for storage in self._storages:
                if storage.nbytes() == nbytes and self._free(storage):
                    return storage
            held = sum(st.nbytes() for st in self._storages)
            while held + nbytes > self.limit_bytes:  # make room: drop the oldest storage nobody uses
                victim = next((st for st in self._storages if self._free(st)), None)
                if victim is None:
                    return torch.UntypedStorage(nbytes)  # all in use: this one is not cached
                self._storages.remove(victim)
                held -= victim.nbytes()
            storage = torch.UntypedStorage(nbytes)
            self._storages.append(storage)
            return storage

    def empty(self) -> None:
        with self._lock:
            self._storages = [st for st in self._storages if not self._free(st)]

    def held_bytes(self) -> int:
        with self._lock:
            return sum(st.nbytes() for st in self._storages)


def output_cache_limit_from_environment() -> int:
    """``$SNN_OUTPUT_CACHE_MB`` in bytes (default 1024 MiB); a value that is not a whole number >= 0 is
    refused with one sentence (:class:`snn.errors.UserError`) at the first call that needs it."""
    text = os.environ.get("SNN_OUTPUT_CACHE_MB")
    if text is None:
        return 1024 << 20
    try:
        megabytes = int(text.strip())
    except ValueError:
        megabytes = -1
    if not 0 <= megabytes <= 1 << 40:
        raise UserError(f"SNN_OUTPUT_CACHE_MB must be a whole number of MiB, 0 or more (0 switches the CPU "
                        f"output cache off; unset means 1024), not {text!r}.")
    return megabytes << 20
