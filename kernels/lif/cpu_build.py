"""Build, cache and load the fused CPU LIF kernel (``lif_cpu.c``) and declare its C interface.

Build: ``$SNN_CC`` (else ``$CC``, else ``cc``) with :data:`CFLAGS`; the library is cached in
``$SNN_CACHE_DIR`` (else ``$XDG_CACHE_HOME/snn-lif``, else ``~/.cache/snn-lif``) under a name that
hashes the source, the compiler, the flags and the CPU's feature flags, and is written by atomic
rename after a record of its size and SHA-256, so concurrent first calls are safe and a damaged
cached file (truncated, overwritten) is rebuilt with one warning instead of being loaded. The build
time is logged once (logger ``snn``) and kept in :data:`BUILD_INFO` (so no figure of it is typed
into prose). Where no compiler is found or the build fails, :func:`load` returns None after one
warning and the ``torch`` backend uses the eager implementation (:mod:`snn.lif.eager`).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("lif_cpu.c")
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
    lib.lif_pool_forward.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_FwdArgs), _i64, ctypes.c_int]
    lib.lif_pool_backward.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_BwdArgs), _i64, ctypes.c_int]
    for name in ("lif_pack_bits", "lif_unpack_bits"):
        getattr(lib, name).argtypes = [ctypes.c_int, _p, _i64, _i64, _p, ctypes.c_int]
    BUILD_INFO["tile"] = lib.lif_tile()  # neurons per tile: tests cross its edges
    return lib


# snn (snn/), its kernels (kernels/, wherever installed) and torch: a warning names the first frame outside them
_PACKAGE_DIRS = (os.path.dirname(os.path.abspath(sys.modules["snn"].__file__)),
                 os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(os.path.abspath(torch.__file__)))


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
