"""The fused CPU LIF: the whole time loop in one pass forward and one reverse pass backward, in C.

The neuron, its options and both recurrences are specified once, in :mod:`snn.neuron`; the kernels
are in ``snn/csrc/lif_cpu.c`` (read its header for the layout, the tiling and the rounding rules).
This module builds that source with the system C compiler at first use, caches the shared library
on disk, and calls it through :mod:`ctypes` on the tensors' data pointers and strides.

Why C and not ``torch.compile``: the fused loop keeps ``v`` in a per-tile buffer, reads ``x`` and
writes the spikes once, and saves only the input ``x`` (which the caller holds anyway; the backward
recomputes ``h``); benchmarks/RESULTS.md compares it with Inductor's code shape by shape. It is built
once per machine (the build time is logged and kept in :data:`BUILD_INFO`; Inductor compiles per shape
and dtype, and again when the last batch of an epoch is smaller) and has no first-call tracing cost.

Build: ``$SNN_CC`` (else ``$CC``, else ``cc``) with :data:`CFLAGS`; the library is cached in
``$SNN_CACHE_DIR`` (else ``$XDG_CACHE_HOME/snn-lif``, else ``~/.cache/snn-lif``) under a name
that hashes the source, the compiler, the flags and the CPU's feature flags, and is written
by atomic rename after a record of its size and SHA-256, so concurrent first calls are safe and a
damaged cached file (truncated, overwritten) is rebuilt with one warning instead of being loaded. The build time is logged once (logger
``snn``) and kept in :data:`BUILD_INFO`. Where no compiler is found or the build fails, the
``torch`` backend falls back to the eager implementation (:mod:`snn.lif_torch`) with one warning.

Exactness: each operation is rounded as PyTorch rounds it (fp32, or fp32 then the 16-bit dtype,
round to nearest even; no fused multiply-add: ``-ffp-contract=off``), so spikes equal the
reference's in every dtype and, for the triangle surrogate, fp32 input gradients equal reference
autograd's bit for bit. Gradients of tensor ``tau``/``thresh`` are fp32 sums over time per
(batch row, neuron), then over the batch in a fixed order: deterministic, independent of the thread
count, and within 1e-6 relative of the eager backend's (which sums in another order).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

from snn.errors import UserError
from snn.neuron import LIFSpec, empty_like_input, make_lif_function
from snn.ops import register_lif_ops

SOURCE = Path(__file__).with_name("csrc") / "lif_cpu.c"
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
PARAM_ROWS = 5  # tau (products), tau (fp32 sums), thresh (comparisons), thresh (products), thresh (fp32 sums)
BUILD_INFO: dict = {}  # compiler, flags, library path, build seconds (None when loaded from the cache), error

_log = logging.getLogger("snn")
_lock = threading.Lock()
_lib = None
_tried = False


class _Surrogate(ctypes.Structure):
    _fields_ = [("a_add", ctypes.c_float), ("a_mul", ctypes.c_float), ("c1", ctypes.c_float), ("c2", ctypes.c_float)]


_i64, _p, _f = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float


class _FwdArgs(ctypes.Structure):
    _fields_ = [
        ("B", _i64), ("T", _i64), ("N", _i64),
        ("x", _p), ("xsb", _i64), ("xst", _i64), ("xsn", _i64),
        ("s", _p), ("h", _p), ("osb", _i64), ("ost", _i64), ("osn", _i64),
        ("params", _p), ("n_param", _i64),
        ("v0", _p), ("v0sb", _i64), ("v0sn", _i64),
        ("vT", _p),
        ("v_reset", _f),
        ("bits", _p), ("bsb", _i64), ("bst", _i64),
    ]


class _BwdArgs(ctypes.Structure):
    _fields_ = [
        ("B", _i64), ("T", _i64), ("N", _i64),
        ("gs", _p), ("gsb", _i64), ("gst", _i64), ("gsn", _i64),
        ("x", _p), ("xsb", _i64), ("xst", _i64), ("xsn", _i64),
        ("gx", _p), ("gxsb", _i64), ("gxst", _i64), ("gxsn", _i64),
        ("params", _p), ("n_param", _i64),
        ("gv", _p), ("gvsb", _i64), ("gvsn", _i64),
        ("v0", _p), ("v0sb", _i64), ("v0sn", _i64),
        ("gv0", _p),
        ("gtau", _p), ("gth", _p), ("work", _p),
        ("v_reset", _f), ("v_reset_fwd", _f),
        ("detach", ctypes.c_int),
        ("k", _Surrogate),
        ("sg", ctypes.c_int), ("soft", ctypes.c_int),
    ]


# ------------------------------------------------------------------------------------------------
# build and load
# ------------------------------------------------------------------------------------------------

def compiler() -> str:
    """The C compiler command: ``$SNN_CC``, else ``$CC``, else ``cc``."""
    return os.environ.get("SNN_CC") or os.environ.get("CC") or "cc"


def cache_dir() -> Path:
    if os.environ.get("SNN_CACHE_DIR"):
        return Path(os.environ["SNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snn-lif"


def _cpu_flags() -> str:
    """The CPU's feature flags: ``-march=native`` code must not be reused on another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return ""


class _BuildProblem(RuntimeError):
    """Why the library cannot be had, with the advice that fits that cause."""

    def __init__(self, cause: str, advice: str):
        super().__init__(cause)
        self.advice = advice


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_of(library: Path) -> Path:
    """Where the size and SHA-256 of a built ``library`` are recorded."""
    return library.with_name(library.name + ".sha256")


def _verified(library: Path) -> bool:
    """Whether ``library`` is the complete file a build wrote: its size and SHA-256 match the record
    written beside it (``<library>.sha256``) before the library itself was renamed into place.

    Loading an unverified file is not safe: ``dlopen`` maps a truncated shared object without
    complaint and the process then dies of SIGBUS on the first access past its end.
    """
    record = _record_of(library)
    try:
        size, digest = record.read_text().split()
        return library.stat().st_size == int(size) and _digest(library) == digest
    except (OSError, ValueError):
        return False


def _compile(path: str, directory: Path, library: Path) -> None:
    """Build into a temporary file, record its size and checksum, then rename it into place (atomic:
    a concurrent first call sees either no library or a complete one with its record)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
        os.close(fd)
    except OSError as exc:
        raise _BuildProblem(f"its cache folder {str(directory)!r} is not writable ({exc.strerror or exc})",
                            "Point SNN_CACHE_DIR at a writable folder.") from None
    start = time.perf_counter()
    try:
        result = subprocess.run([path, *CFLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            raise _BuildProblem(f"{os.path.basename(path)} failed ({result.returncode}): {result.stderr.strip()[:2000]}",
                                "Point SNN_CC at a C compiler with OpenMP support (e.g. gcc).")
        record = _record_of(library)
        record_tmp = Path(tmp + ".sha256")
        record_tmp.write_text(f"{os.path.getsize(tmp)} {_digest(Path(tmp))}\n")
        os.replace(record_tmp, record)
        os.replace(tmp, library)
    except OSError as exc:
        raise _BuildProblem(f"writing it into {str(directory)!r} failed ({exc.strerror or exc})",
                            "Free some space there or point SNN_CACHE_DIR at another folder.") from None
    finally:
        for leftover in (tmp, tmp + ".sha256"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    BUILD_INFO["build_seconds"] = round(time.perf_counter() - start, 2)
    _log.info("snn: built the fused CPU LIF kernel (%s) in %.2f s: %s", os.path.basename(path),
              BUILD_INFO["build_seconds"], library)


def _build() -> ctypes.CDLL:
    cc = compiler()
    path = shutil.which(cc)
    if path is None:
        raise _BuildProblem(f"no C compiler {cc!r} on PATH",
                            "Install a C compiler with OpenMP (e.g. gcc) or point SNN_CC at one.")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, path.encode(), " ".join(CFLAGS).encode(), _cpu_flags().encode()])).hexdigest()[:16]
    directory = cache_dir()
    library = directory / f"lif_cpu-{key}.so"
    BUILD_INFO.update(compiler=path, flags=" ".join(CFLAGS), library=str(library), build_seconds=None)
    if not _verified(library):  # one read and hash of the cached file per process
        if library.exists() and _record_of(library).exists():  # (no record: built before records existed)
            warnings.warn(f"snn: the cached fused CPU LIF library {str(library)!r} is incomplete or damaged; "
                          "rebuilding it.", RuntimeWarning, stacklevel=_user_stacklevel())
            BUILD_INFO["rebuilt_damaged"] = True
        _compile(path, directory, library)
    lib = ctypes.CDLL(str(library))
    lib.lif_forward.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_FwdArgs), ctypes.c_int]
    lib.lif_backward.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_BwdArgs), ctypes.c_int]
    for name in ("lif_pack_bits", "lif_unpack_bits"):
        getattr(lib, name).argtypes = [ctypes.c_int, _p, _i64, _i64, _p, ctypes.c_int]
    BUILD_INFO["tile"] = lib.lif_tile()  # neurons per tile: tests cross its edges
    return lib


_PACKAGE_DIRS = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(torch.__file__)))


def _user_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the first frame outside snn and torch, so the
    warning shows the user's line, not one of ours."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def load():
    """The compiled library, built on first use; None (after one warning) where it cannot be built."""
    global _lib, _tried
    if _tried:
        return _lib
    OUTPUT_CACHE.limit_bytes  # a bad $SNN_OUTPUT_CACHE_MB is refused at the first call, whatever its size
    with _lock:
        if not _tried:
            try:
                _lib = _build()
            except Exception as exc:  # no compiler, a failed build, an unwritable cache, an unloadable library
                BUILD_INFO["error"] = f"{type(exc).__name__}: {exc}"
                advice = getattr(exc, "advice", "Install a C compiler with OpenMP (e.g. gcc) or point SNN_CC at one.")
                warnings.warn(
                    f"snn: the fused CPU LIF kernel is unavailable: {exc}. The torch backend uses its eager "
                    f"implementation on the CPU (correct, several times slower). {advice}", RuntimeWarning,
                    stacklevel=_user_stacklevel())
                _lib = None
            _tried = True
    return _lib


def available() -> bool:
    return load() is not None


def _reset_for_tests() -> None:
    """Forget the loaded library so that the next call builds (or fails) again."""
    global _lib, _tried
    with _lock:
        _lib, _tried = None, False
        BUILD_INFO.clear()


def supports(x: torch.Tensor, *others) -> bool:
    """Whether the fused path runs this call (a CPU float32/bfloat16/float16 input, library built)."""
    return _cpu_tensors(x, *others) and available()


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


OUTPUT_CACHE = OutputCache()


def empty_output_cache() -> None:
    """Free the cached output storages that no tensor uses (:class:`OutputCache`)."""
    OUTPUT_CACHE.empty()


def _fresh_output(x: torch.Tensor, time_major: bool) -> torch.Tensor:
    """An uninitialised output laid out as :func:`snn.neuron.empty_like_input` lays it out; a large
    one over a storage from :data:`OUTPUT_CACHE`."""
    nbytes = x.numel() * x.element_size()
    if nbytes < LARGE_OUTPUT_BYTES:
        return empty_like_input(x, time_major)
    return empty_like_input(x, time_major, storage=OUTPUT_CACHE.storage(nbytes))


# ------------------------------------------------------------------------------------------------
# launchers
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _round(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (as PyTorch rounds a Python number in a sum or a comparison)."""
    return torch.tensor(value, dtype=torch.float64).to(dtype).item()


@functools.lru_cache(maxsize=256)
def _f32(value: float) -> float:
    return torch.tensor(value, dtype=torch.float64).to(torch.float32).item()


def _as_btn(t: torch.Tensor, B: int, T: int, N: int) -> torch.Tensor:
    """``t [B, T, ...]`` as ``[B, T, N]``: a view where the neuron dims collapse, else a copy."""
    try:
        return t.view(B, T, N)
    except RuntimeError:
        return t.reshape(B, T, N).contiguous()


def _as_bn(t: torch.Tensor, B: int, N: int) -> torch.Tensor:
    try:
        return t.view(B, N)
    except RuntimeError:
        return t.reshape(B, N).contiguous()


def _params(tau, thresh, dtype: torch.dtype, neuron_shape, N: int) -> torch.Tensor:
    """The ``[PARAM_ROWS, n]`` fp32 table of tau/thresh as each use rounds them (csrc header)."""
    per_neuron = isinstance(tau, torch.Tensor) or isinstance(thresh, torch.Tensor)
    if not per_neuron:
        return _scalar_params(tau, thresh, dtype)
    return _build_params(tau, thresh, dtype, neuron_shape, N, per_neuron)


@functools.lru_cache(maxsize=64)
def _scalar_params(tau: float, thresh: float, dtype: torch.dtype) -> torch.Tensor:
    """The table for number tau/thresh (cached: the kernels only read it)."""
    return _build_params(tau, thresh, dtype, (1,), 1, False)


def _build_params(tau, thresh, dtype, neuron_shape, N, per_neuron) -> torch.Tensor:
    table = torch.empty(PARAM_ROWS, N if per_neuron else 1, dtype=torch.float32)

    def put(row, value):
        if isinstance(value, torch.Tensor):
            table[row].view(neuron_shape).copy_(value.detach().expand(neuron_shape))
        else:
            table[row].fill_(value)

    if isinstance(tau, torch.Tensor):
        put(0, tau.to(dtype))
        put(1, tau.to(torch.float32))
    else:
        put(0, _f32(tau))  # a product uses the Python number in fp32, whatever the dtype
        put(1, _f32(tau))
    if isinstance(thresh, torch.Tensor):
        put(2, thresh.to(dtype))
        put(3, thresh.to(dtype))
        put(4, thresh.to(torch.float32))
    else:
        put(2, _round(thresh, dtype))  # a difference or comparison rounds it to the dtype first
        put(3, _f32(thresh))
        put(4, _f32(thresh))
    return table


@functools.lru_cache(maxsize=64)
def _surrogate_consts(spec: LIFSpec, dtype: torch.dtype) -> _Surrogate:
    alpha = spec.surrogate_alpha
    if spec.surrogate == "triangle":
        return _Surrogate(_round(alpha, dtype), _f32(alpha), _f32(1.0 / alpha / alpha), 0.0)
    if spec.surrogate == "sigmoid":
        return _Surrogate(0.0, _f32(alpha), 0.0, 0.0)
    if spec.surrogate == "atan":
        return _Surrogate(0.0, _f32(alpha), _f32(math.pi / 2 * alpha), _f32(alpha / 2))
    if spec.surrogate == "fast_sigmoid":
        return _Surrogate(0.0, _f32(alpha), 0.0, 0.0)
    return _Surrogate(0.0, _f32(alpha), _round(0.5 / alpha, dtype), 0.0)


_RESET_CODES = {"hard": 0, "soft": 1, "subtract_next": 2}  # RS_* of the C backward


def lif_cpu_forward(x, tau, thresh, spec: LIFSpec, v0, time_major: bool, save_h: bool, bits=None):
    """``(spikes, h or None, v_final)`` for ``x [B, T, ...]`` (any strides), by the C forward.

    ``bits``: an optional uint8 ``[B, T, ceil(N/8)]`` tensor (``N`` = the neurons of one step; byte
    strides, last one 1) that the same pass fills with the spikes bit-packed (:mod:`snn.memory`)."""
    lib = load()
    B, T, neuron_shape = x.shape[0], x.shape[1], tuple(x.shape[2:])
    N = math.prod(neuron_shape)
    spikes = _fresh_output(x, time_major)
    h = _fresh_output(x, time_major) if save_h else None
    v = torch.empty((B, *neuron_shape), dtype=x.dtype)
    if B * T * N == 0:
        if T == 0:
            v.copy_(torch.zeros_like(v) if v0 is None else v0.to(x.dtype))
        return spikes, h, v
    x3, s3 = _as_btn(x, B, T, N), spikes.view(B, T, N)
    table = _params(tau, thresh, x.dtype, neuron_shape, N)
    v0_2 = None if v0 is None else _as_bn(v0.detach().to(x.dtype), B, N)
    mode = {"soft": 2, "subtract_next": 3}.get(spec.reset, 1 if spec.v_reset != 0.0 else 0)
    args = _FwdArgs(
        B, T, N, x3.data_ptr(), *x3.stride(), s3.data_ptr(), 0 if h is None else h.data_ptr(), *s3.stride(),
        table.data_ptr(), table.shape[1],
        0 if v0_2 is None else v0_2.data_ptr(), *(v0_2.stride() if v0_2 is not None else (0, 0)),
        v.data_ptr(), _round(spec.v_reset, x.dtype),
        0 if bits is None else bits.data_ptr(), *((0, 0) if bits is None else _bit_strides(bits, B, T, N)),
    )
    if lib.lif_forward(DTYPES[x.dtype], mode, ctypes.byref(args), torch.get_num_threads()) != 0:
        raise RuntimeError(f"lif_cpu: the C forward refused dtype {x.dtype}")
    return spikes, h, v


def _bit_strides(bits: torch.Tensor, B: int, T: int, N: int) -> tuple[int, int]:
    if bits.dtype != torch.uint8 or tuple(bits.shape) != (B, T, (N + 7) // 8) or bits.stride(2) != 1:
        raise ValueError(f"lif_cpu: bits must be a uint8 tensor of shape {(B, T, (N + 7) // 8)} with a unit last "
                         f"stride, got {bits.dtype} {tuple(bits.shape)} strides {bits.stride()}")
    return bits.stride(0), bits.stride(1)


def pack_bits_cpu(spikes: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Fill ``bits`` (contiguous uint8 ``[rows, ceil(n/8)]``) from contiguous 0/1 ``spikes [rows, n]`` (C)."""
    rows, n = spikes.shape
    load().lif_pack_bits(DTYPES[spikes.dtype], spikes.data_ptr(), rows, n, bits.data_ptr(), torch.get_num_threads())
    return bits


def unpack_bits_cpu(bits: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
    """Fill contiguous ``spikes [rows, n]`` with the 0/1 spikes of ``bits`` (the inverse of :func:`pack_bits_cpu`)."""
    rows, n = spikes.shape
    load().lif_unpack_bits(DTYPES[spikes.dtype], bits.data_ptr(), rows, n, spikes.data_ptr(), torch.get_num_threads())
    return spikes


def lif_cpu_backward(grad_spikes, x, tau, thresh, spec: LIFSpec, grad_v=None, v0=None, time_major=False,
                     need_tau=False, need_thresh=False, need_v0=False):
    """``(g_x, g_tau, g_thresh, g_v0)`` by the C reverse scan (None where not needed).

    The kernel recomputes ``h`` from the saved input ``x`` tile by tile (kept in a per-thread
    buffer), then runs the reverse recurrence: the forward saves no tensor of its own.
    """
    lib = load()
    B, T, neuron_shape = x.shape[0], x.shape[1], tuple(x.shape[2:])
    N = math.prod(neuron_shape)
    dtype = x.dtype
    grad_x = _fresh_output(x, time_major)
    grad_v0 = torch.empty((B, *neuron_shape), dtype=dtype) if need_v0 else None
    need_tau = need_tau and isinstance(tau, torch.Tensor)
    need_thresh = need_thresh and isinstance(thresh, torch.Tensor)
    g_tau = torch.empty(N, dtype=torch.float32) if need_tau else None
    g_th = torch.empty(N, dtype=torch.float32) if need_thresh else None
    if B * T * N == 0:
        grad_x.zero_()
        if grad_v0 is not None:
            grad_v0.copy_(torch.zeros_like(grad_v0) if grad_v is None or T > 0 else grad_v)
        g_tau = None if g_tau is None else g_tau.zero_()
        g_th = None if g_th is None else g_th.zero_()
    else:
        if grad_spikes is None:
            grad_spikes = torch.zeros((), dtype=dtype).expand(x.shape)
        gs3 = _as_btn(grad_spikes.to(dtype), B, T, N)
        x3, gx3 = _as_btn(x, B, T, N), grad_x.view(B, T, N)
        gv2 = None if grad_v is None else _as_bn(grad_v.to(dtype), B, N)
        v02 = None if v0 is None else _as_bn(v0.detach().to(dtype), B, N)
        table = _params(tau, thresh, dtype, neuron_shape, N)
        work = torch.empty(2, B, N, dtype=torch.float32) if (need_tau or need_thresh) else None
        args = _BwdArgs(
            B, T, N, gs3.data_ptr(), *gs3.stride(), x3.data_ptr(), *x3.stride(), gx3.data_ptr(), *gx3.stride(),
            table.data_ptr(), table.shape[1],
            0 if gv2 is None else gv2.data_ptr(), *(gv2.stride() if gv2 is not None else (0, 0)),
            0 if v02 is None else v02.data_ptr(), *(v02.stride() if v02 is not None else (0, 0)),
            0 if grad_v0 is None else grad_v0.data_ptr(),
            0 if g_tau is None else g_tau.data_ptr(), 0 if g_th is None else g_th.data_ptr(),
            0 if work is None else work.data_ptr(),
            _f32(spec.v_reset), _round(spec.v_reset, dtype), int(spec.detach_reset), _surrogate_consts(spec, dtype),
            spec.surrogate_id, _RESET_CODES[spec.reset],
        )
        rc = lib.lif_backward(DTYPES[dtype], spec.surrogate_id, _RESET_CODES[spec.reset], ctypes.byref(args),
                              torch.get_num_threads())
        if rc != 0:
            raise (MemoryError if rc == -2 else RuntimeError)(f"lif_cpu: the C backward failed ({rc})")
    if g_tau is not None:
        g_tau = g_tau.view(neuron_shape).sum_to_size(tau.shape).to(tau.dtype)
    if g_th is not None:
        g_th = g_th.view(neuron_shape).sum_to_size(thresh.shape).to(thresh.dtype)
    if grad_v0 is not None:
        grad_v0 = grad_v0.to(v0.dtype)
    return grad_x, g_tau, g_th, grad_v0


class LIFCpuFunction(torch.autograd.Function):
    """Saves the input ``x`` (which the caller or its producer holds anyway: no new bytes per
    neuron-step) and, where they are tensors, tau / thresh / v0; the backward recomputes ``h``."""

    @staticmethod
    def forward(ctx, x, tau, thresh, v0, spec: LIFSpec, return_h: bool, time_major: bool):
        needs_grad = any(ctx.needs_input_grad[:4])
        spikes, h, v = lif_cpu_forward(x, tau, thresh, spec, v0, time_major, save_h=return_h)
        ctx.set_materialize_grads(False)  # an unused final potential must not become a 0 * inf carry
        if needs_grad:
            ctx.save_for_backward(x, *(t for t in (tau, thresh, v0) if isinstance(t, torch.Tensor)))
        ctx.tensor_params = tuple(isinstance(t, torch.Tensor) for t in (tau, thresh, v0))
        ctx.scalars = (tau, thresh)
        ctx.spec = spec
        ctx.time_major = time_major
        if not return_h:
            return spikes, v, None
        ctx.mark_non_differentiable(h)
        return spikes, v, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes, grad_v, _grad_h):
        x, *saved = ctx.saved_tensors
        tau, thresh = ctx.scalars
        it = iter(saved)
        tau = next(it) if ctx.tensor_params[0] else tau
        thresh = next(it) if ctx.tensor_params[1] else thresh
        v0 = next(it) if ctx.tensor_params[2] else None
        if grad_spikes is None and grad_v is None:
            return None, None, None, None, None, None, None
        needs = ctx.needs_input_grad
        grads = lif_cpu_backward(grad_spikes, x, tau, thresh, ctx.spec, grad_v, v0, ctx.time_major,
                                 need_tau=needs[1], need_thresh=needs[2], need_v0=needs[3])
        return (*grads, None, None, None)


def lif_cpu_core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
    """The core of :func:`snn.neuron.make_lif_function` for the fused path (call :func:`supports` first)."""
    spikes, v, h = LIFCpuFunction.apply(x, tau, thresh, v0, spec, return_h, time_major)
    return spikes, (v if return_v else None), h


def _op_forward(x, tau, thresh, spec, v0, save_h, return_v, time_major):
    return lif_cpu_forward(x, tau, thresh, spec, v0, time_major, save_h)


def _op_backward(grad_spikes, x, tau, thresh, spec, grad_v, v0, need_tau, need_thresh, need_v0, grad_dtype, time_major):
    return lif_cpu_backward(grad_spikes, x, tau, thresh, spec, grad_v, v0, time_major, need_tau, need_thresh, need_v0)


# The registered operators snn::lif_fwd_torch / snn::lif_bwd_torch (snn/ops.py) around the C launchers:
# what torch.compile sees on the CPU. Opaque to Dynamo (only their fake implementations are traced),
# so Inductor calls the fused kernel forward and backward; autograd saves the input, as LIFCpuFunction.
fused_op_core = register_lif_ops("torch", _op_forward, _op_backward, saves_input=True)


@torch.compiler.assume_constant_result
def _library_available() -> bool:
    """:func:`available`, which Dynamo evaluates once while tracing instead of tracing load()'s lock."""
    return available()


def _cpu_tensors(x, *others) -> bool:
    return x.device.type == "cpu" and x.dtype in DTYPES and all(
        not isinstance(t, torch.Tensor) or t.device.type == "cpu" for t in others)


def _dispatch_core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
    """Where the ``torch`` backend computes a call.

    * Plain eager calls on CPU float32/bfloat16/float16 tensors: the fused C kernel through
      :class:`LIFCpuFunction` (no dispatcher; with ``snn.ops.EAGER_FAST_PATH = False``, through the
      registered op ``snn::lif_fwd_torch`` instead, which computes the same bits).
    * ``torch.compile`` of such tensors: the same kernel as that registered op, which Inductor calls
      as an opaque kernel forward and backward (:func:`snn.ops.register_lif_ops`).
    * Everything else: the registered eager op (``snn::lif_fwd_eager``, snn.lif_torch): other devices
      and dtypes, a missing C compiler, and torch.export, make_fx and torch.func, whose programs
      keep the portable pure-PyTorch op.
    """
    from snn.ops import _plain_eager, EAGER_FAST_PATH

    tensors = tuple(t for t in (tau, thresh) if isinstance(t, torch.Tensor))
    # _plain_eager first: under torch.compile it is False, so Dynamo never reaches load()'s lock.
    if _plain_eager(x, *tensors, v0):
        if supports(x, *tensors, v0):
            if EAGER_FAST_PATH:
                return lif_cpu_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)
            return fused_op_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)
    elif (torch.compiler.is_compiling() and not torch.compiler.is_exporting()
          and _cpu_tensors(x, *tensors, v0) and _library_available()):
        return fused_op_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)
    from snn.lif_torch import eager_core

    return eager_core(x, tau, thresh, spec, v0, return_v, return_h, time_major)


# What the ``torch`` backend runs: this file's C kernel on the CPU, snn.lif_torch's eager code elsewhere.
lif_torch_fused = make_lif_function(_dispatch_core, "lif_torch")
