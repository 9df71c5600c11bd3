"""Fused Leaky Integrate-and-Fire (LIF) layer: one Triton kernel for the forward, one for the backward
(:mod:`kernels.lif.triton_kernels`); this module is their host side: checks, output buffers, tiles,
pointers and flags, launches, and the registered operators.

The neuron, every option and the one derivation of the forward and backward are in
:mod:`snn.lif.spec` (not restated here); this module implements them, proven against
:func:`snn.lif.reference.lif_reference` by ``tests/test_lif_contract.py`` and ``tests/test_kernel_lif.py``.
All arithmetic is in fp32 whatever the input dtype; ``tau`` and ``thresh`` are numbers or
per-neuron tensors (learnable: the backward sums their gradients deterministically per tile, then
over tiles), and ``v0``/``return_v`` continue a sequence. No double backward.

What this kernel adds to the spec:

* The backward's grouping is the spec's, the order reference autograd rounds in, so fp32 input
  gradients equal the reference's to the last bit for the defaults. The last step is peeled (no
  ``c`` term: reference autograd never visits the unused last reset, so ``0 * h`` never makes a
  NaN when ``h`` is infinite).
* Saved state (counted with ``saved_tensors_hooks`` in the tests): only ``h``, in
  :func:`saved_h_dtype`: fp32 for fp32 input (4 B per neuron-step); the 16-bit input dtype for
  16-bit input (2 B), except for the ``rectangle`` and ``fast_sigmoid`` surrogates, which save fp32
  (reasons in :func:`saved_h_dtype`). The 16-bit rounding is threshold-consistent: when the
  round-to-nearest value lands on the other side of ``thresh`` than the fp32 ``h``, the neighbouring
  value on the forward's side is stored, so the backward recovers the forward's spikes exactly; a
  finite ``h`` past the 16-bit range is saved as the largest finite value. Neither ``x`` nor the
  spikes are saved; under ``torch.no_grad`` ``h`` is not written.
* Memory traffic per neuron-step, the minimum for this op: forward reads ``x`` and writes ``s`` and
  ``h`` (12 B fp32, 6 B 16-bit; 8 B / 4 B without grad), backward reads ``g_s`` and ``h`` and writes
  ``g_x`` (12 B fp32, 6 B 16-bit).
* No fused multiply-add: both kernels are launched with ``enable_fp_fusion=False`` (no LLVM
  contraction, ``ptxas --fmad=false``), because an FMA rounds ``v * tau + x`` once and flips a spike
  whenever the unfused sum lands exactly on ``thresh``. The interpreter evaluates each op separately
  in numpy, unfused too. A test constructs inputs where the two roundings disagree.

Layout. ``x`` is viewed as ``[B, T, N]`` (no copy when the trailing dims collapse) and read through
its strides, so transposed views and a stride-0 time dimension are read in place. Outputs are
written through their strides too: ``[B, T, ...]`` by default, ``[T, B, ...]`` storage with
``time_major=True``, or the caller's buffers (``out=``/``h_out=``). A 1-D grid enumerates
``[BLOCK_B, BLOCK_N]`` tiles of the ``(B, N)`` neuron plane, N fastest; each program owns its tile
for all T steps (``T`` is a runtime loop bound, so long sequences do not recompile). Offsets are
int64, so tensors past 2**31 elements are addressed correctly.

Interpreter. When no CUDA device is present and the user has not chosen, the kernels run in Triton's
CPU interpreter (chosen by :mod:`kernels.lif.triton_interpreter` before they are decorated), and the
first launch logs one line saying so.

Compiled code (checked without a GPU by ``tests/test_static_sm90.py``, report in
``benchmarks/RESULTS.md``): each step's loads are issued before the previous step's stores (both
kernels), a stride-0 time input is loaded once per tile (``X_BCAST``), and compiled launches convert
with the hardware's ``cvt.rn`` (``HW_CVT``; the interpreter keeps the hand-written exact path).
Contiguous, 16-byte-aligned tensors with N % 16 == 0 get 128-bit accesses; other N or an offset view
fall back to scalar accesses on that tensor (about 2x the instructions).
"""

from __future__ import annotations

import logging
import math
import numbers

import torch

from snn.lif.eager import differentiable_h
from snn.lif.signature import make_lif_function
from snn.lif.spec import LIFSpec, surrogate_constants
from snn.lif.ops import register_lif_ops

from .triton_bounds import _side_bounds
from .triton_kernels import _lif_bwd_kernel, _lif_fwd_kernel

import triton  # noqa: E402  (after triton_kernels, which chooses the interpreter first)

_log = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Tile shape. A program owns at most TILE_NEURONS neurons, BLOCK_B x BLOCK_N, for all T steps;
# BLOCK_N, the contiguous (vectorised) direction, is at most TILE_NEURONS too, and a narrower N
# gets more rows. 1024 neurons per program with 4 warps is 8 elements per thread (two
# 16-byte loads of fp32): on an H200 (132 SMs, 16 resident 4-warp programs each) that keeps about
# 64 KiB of loads in flight per SM per step of this memory-bound scan, and the grids are several
# waves (B=8192, N=512 -> 2 x 512 tiles, 4096 programs; B=256, N=65536 -> 1 x 1024 tiles, 16384
# programs). Not yet tuned on the device. Tests shrink it to cross tile boundaries cheaply.
TILE_NEURONS = 1024

# Testing aid: when True, output buffers are filled with NaN before launch so that any element a
# kernel fails to write shows up. Costs nothing when False.
POISON_OUTPUTS = False

# Whether Triton decorated the kernels for its CPU interpreter (decided when they were decorated).
INTERPRETED = not isinstance(_lif_fwd_kernel, triton.runtime.JITFunction)
_notice_logged = False


# ----------------------------------------------------------------------------------------------
# host launchers
# ----------------------------------------------------------------------------------------------


def _error(exc_type, message: str):
    """The exception to raise: ``exc_type`` with ``message`` prefixed by ``lif_triton:``."""
    return exc_type(f"lif_triton: {message}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_input(x, what: str = "x") -> None:
    """One clear sentence per mistake; never an assert (they vanish under python -O)."""
    if not isinstance(x, torch.Tensor):
        raise _error(TypeError, f"expected {what} to be a torch.Tensor of shape [B, T, ...], got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        hint = " (the kernel computes in float32; cast with .float())" if x.dtype == torch.float64 else ""
        raise _error(
            TypeError,
            f"expected a float16, bfloat16 or float32 tensor of shape [B, T, ...] for {what}, "
            f"got {_dtype_name(x.dtype)}{hint}",
        )
    if x.dim() < 2:
        raise _error(
            ValueError,
            f"expected a float16, bfloat16 or float32 tensor of shape [B, T, ...] for {what}, "
            f"got shape {tuple(x.shape)}",
        )
    if INTERPRETED:
        if x.device.type not in ("cpu", "cuda"):
            raise _error(ValueError, f"the Triton interpreter needs a cpu or cuda tensor, got {what} on {x.device}")
    elif x.device.type != "cuda":
        raise _error(
            ValueError,
            f"the compiled Triton kernel needs a CUDA tensor, got {what} on {x.device} "
            "(set TRITON_INTERPRET=1 before importing kernels to run the slow CPU interpreter)",
        )


def _check_params(tau, thresh, gamma) -> tuple:
    """``tau``/``thresh``: numbers, or tensors (checked for shape by snn.lif.spec); ``gamma`` (alpha): a number or None."""
    for name, value in (("tau", tau), ("thresh", thresh), ("gamma", gamma)):
        if value is None and name == "gamma":
            continue
        if isinstance(value, torch.Tensor) and name != "gamma":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _error(TypeError, f"{name} must be a Python number, got {type(value).__name__}")
    as_float = (lambda v: v if isinstance(v, torch.Tensor) or v is None else float(v))
    return as_float(tau), as_float(thresh), as_float(gamma)


def saved_h_dtype(x_dtype: torch.dtype, spec: LIFSpec) -> torch.dtype:
    """The dtype ``h`` is saved in: fp32 for fp32 input; the 16-bit input dtype otherwise, except for
    the rectangle surrogate, whose window edges a rounded ``h`` could cross (the side-consistent
    rounding protects the threshold only, and the rectangle jumps from 0 to alpha at its edges): it
    saves fp32, 4 B per neuron-step instead of 2, and gets the forward's exact window. So does
    ``fast_sigmoid``, whose slope at the threshold (``2 * alpha``, 50 by default) turns a 16-bit
    rounding of ``h`` into a gradient error several times the 16-bit reference's own (measured in
    tests/test_lif_contract.py)."""
    if x_dtype == torch.float32 or spec.surrogate in ("rectangle", "fast_sigmoid"):
        return torch.float32
    return x_dtype


def _spec_of(gamma, spec: LIFSpec | None) -> LIFSpec:
    """The neuron: ``spec``, or the seed's neuron with the triangle's ``gamma``; never both."""
    if spec is None:
        return LIFSpec(alpha=gamma)
    if gamma is not None and gamma != spec.surrogate_alpha:
        raise _error(ValueError, f"gamma={gamma} contradicts spec.alpha={spec.surrogate_alpha}; pass one of them")
    return spec


def _neuron_vector(value, shape, device) -> torch.Tensor | None:
    """A tensor ``tau``/``thresh`` as the fp32 ``[N]`` row the kernels load per tile (None for a number)."""
    if not isinstance(value, torch.Tensor):
        return None
    return value.detach().to(device=device, dtype=torch.float32).expand(shape).reshape(-1).contiguous()


def _reduce_to_param(partials: torch.Tensor, param: torch.Tensor, neuron_shape) -> torch.Tensor:
    """Per-tile-row partial sums [rows, N] -> the parameter's gradient, in a fixed order (deterministic)."""
    return partials.sum(dim=0).view(neuron_shape).sum_to_size(param.shape).to(param.dtype)


def _as_3d(t: torch.Tensor, B: int, T: int, N: int) -> torch.Tensor:
    """[B, T, ...] -> [B, T, N]: a view when the trailing dims collapse, else a contiguous copy."""
    try:
        return t.view(B, T, N)
    except RuntimeError:
        return t.reshape(B, T, N)


def _output_buffer(shape, dtype: torch.dtype, device: torch.device, time_major: bool = False) -> torch.Tensor:
    """An output buffer (NaN-filled when POISON_OUTPUTS); ``time_major``: [T, B, ...] storage seen as [B, T, ...]."""
    if time_major:
        return _output_buffer((shape[1], shape[0], *shape[2:]), dtype, device).transpose(0, 1)
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _check_out(out, name: str, shape, dtype: torch.dtype, device: torch.device, B: int, T: int, N: int):
    """A caller-provided output buffer (any strides), viewed as [B, T, N] without copying."""
    if not isinstance(out, torch.Tensor) or out.shape != shape or out.dtype != dtype or out.device != device:
        got = (
            f"{tuple(out.shape)} {_dtype_name(out.dtype)} on {out.device}"
            if isinstance(out, torch.Tensor)
            else type(out).__name__
        )
        raise _error(ValueError, f"{name} must be a {_dtype_name(dtype)} tensor of shape {tuple(shape)} on {device}, got {got}")
    try:
        return out.view(B, T, N)
    except RuntimeError:
        raise _error(ValueError, f"{name} must be viewable as [B, T, N] = [{B}, {T}, {N}] without a copy") from None


def _check_bits(bits, B: int, T: int, N: int, device) -> torch.Tensor:
    if (not isinstance(bits, torch.Tensor) or bits.dtype != torch.uint8 or tuple(bits.shape) != (B, T, (N + 7) // 8)
            or bits.device != device or bits.stride(2) != 1):
        raise _error(ValueError, f"bits_out must be a uint8 tensor of shape {(B, T, (N + 7) // 8)} on {device} "
                                "with a unit last stride")
    return bits


def _block_config(B: int, N: int) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_N, num_warps) for a [B, N] neuron plane."""
    block_n = min(triton.next_power_of_2(N), TILE_NEURONS)
    block_b = max(1, min(TILE_NEURONS // block_n, triton.next_power_of_2(B)))
    num_warps = max(1, min(8, block_b * block_n // 256))
    return block_b, block_n, num_warps


def _log_interpreter_notice() -> None:
    global _notice_logged
    if INTERPRETED and not _notice_logged:
        _notice_logged = True
        _log.warning("kernels.lif.triton_launch: the Triton LIF kernel runs in the Triton interpreter on CPU (TRITON_INTERPRET=1): correct but slow.")


# Compile options of every launch. enable_fp_fusion=False: no FMA contraction, so products and sums
# round like eager PyTorch (see the module docstring). The interpreter ignores compile options.
LAUNCH_OPTIONS = {"enable_fp_fusion": False}


def _launch_config(B: int, N: int, constexprs: dict) -> tuple[tuple[int], dict]:
    """(grid, keyword arguments) of a launch over the tiles of a ``[B, N]`` neuron plane.

    Shared with ``tests/proofs/static_sm90.py``, which compiles exactly these launches for sm_90.
    """
    block_b, block_n, num_warps = _block_config(B, N)
    grid = (triton.cdiv(B, block_b) * triton.cdiv(N, block_n),)
    return grid, dict(BLOCK_B=block_b, BLOCK_N=block_n, num_warps=num_warps, **constexprs, **LAUNCH_OPTIONS)


def _fwd_launch(x3, s3, h3, B: int, T: int, N: int, tau, thresh, save_h: bool, spec: LIFSpec = LIFSpec(),
                tau_vec=None, thresh_vec=None, bounds=None, v0=None, v_out=None, bits=None):
    """(kernel, positional args, constexprs) of the forward launch for [B, T, N] views.

    ``tau_vec``/``thresh_vec``: fp32 [N] rows for per-neuron parameters (``bounds``: their [4, N]
    side bounds for a 16-bit save); ``v0``: a [B, N] view; ``v_out``: a contiguous fp32 [B, N].
    Unused pointers are given ``x3`` (never dereferenced: their constexpr flag is off).
    """
    scalar_bounds = _side_bounds(thresh, h3.dtype) if thresh_vec is None else (0.0,) * 4
    args = (
        x3, s3, h3, _pointer(tau_vec, x3), _pointer(thresh_vec, x3), _pointer(bounds, x3), _pointer(v0, x3), _pointer(v_out, x3),
        _pointer(bits, x3), B, T, N, *x3.stride(), *s3.stride(), *h3.stride(), *(v0.stride() if v0 is not None else (0, 0)),
        *((0, 0) if bits is None else bits.stride()[:2]), 0.0 if tau_vec is not None else tau, 0.0 if thresh_vec is not None else thresh, spec.v_reset, *scalar_bounds,
    )
    constexprs = dict(
        SAVE_H=save_h, X_BCAST=x3.stride(1) == 0, SOFT_RESET=spec.reset == "soft", HAS_V_RESET=spec.v_reset != 0.0,
        DELAYED_RESET=spec.reset == "subtract_next", TAU_VEC=tau_vec is not None, THRESH_VEC=thresh_vec is not None,
        HAS_V0=v0 is not None, WRITE_V=v_out is not None,
        HW_CVT=not INTERPRETED, **({"WRITE_BITS": True} if bits is not None else {}),
    )
    return _lif_fwd_kernel, args, constexprs


def _bwd_launch(gs3, h3, gx3, B: int, T: int, N: int, tau, thresh, gamma=None, spec: LIFSpec | None = None,
                tau_vec=None, thresh_vec=None, grad_v=None, v0=None, grad_v0=None, grad_tau=None, grad_thresh=None):
    """(kernel, positional args, constexprs) of the backward launch for [B, T, N] views.

    Optional [B, N] views: ``grad_v`` (final potential's gradient), ``v0``; outputs ``grad_v0``
    (contiguous fp32 [B, N]) and ``grad_tau``/``grad_thresh`` (fp32 [rows of tiles, N] partial sums).
    """
    spec = _spec_of(gamma, spec)
    args = (
        gs3, h3, gx3, _pointer(tau_vec, gs3), _pointer(thresh_vec, gs3), _pointer(grad_v, gs3), _pointer(v0, gs3), _pointer(grad_v0, gs3),
        _pointer(grad_tau, gs3), _pointer(grad_thresh, gs3),
        B, T, N, *gs3.stride(), *h3.stride(), *gx3.stride(),
        *(grad_v.stride() if grad_v is not None else (0, 0)), *(v0.stride() if v0 is not None else (0, 0)),
        0.0 if tau_vec is not None else tau, 0.0 if thresh_vec is not None else thresh, spec.v_reset,
        *surrogate_constants(spec),
    )
    constexprs = dict(
        SURROGATE=spec.surrogate_id, SOFT_RESET=spec.reset in ("soft", "subtract_next"), HAS_V_RESET=spec.v_reset != 0.0,
        DELAYED_RESET=spec.reset == "subtract_next", DETACH_RESET=spec.detach_reset, TAU_VEC=tau_vec is not None, THRESH_VEC=thresh_vec is not None,
        HAS_GV=grad_v is not None, HAS_V0=v0 is not None, WRITE_GV0=grad_v0 is not None,
        NEED_TAU=grad_tau is not None, NEED_THRESH=grad_thresh is not None, HW_CVT=not INTERPRETED,
    )
    return _lif_bwd_kernel, args, constexprs


def _pointer(tensor, placeholder):
    """``tensor``, or ``placeholder`` standing in for an absent one (never dereferenced: its flag is off)."""
    return placeholder if tensor is None else tensor


def _launch(kernel, B: int, N: int, args, constexprs: dict) -> None:
    """Launch ``kernel`` over the tiles of a ``[B, N]`` neuron plane (see :func:`_block_config`)."""
    _log_interpreter_notice()
    grid, kwargs = _launch_config(B, N, constexprs)
    kernel[grid](*args, **kwargs)


def lif_forward(
    x: torch.Tensor,
    tau,
    thresh,
    gamma: float | None = None,
    *,
    spec: LIFSpec | None = None,
    save_h: bool = True,
    v0: torch.Tensor | None = None,
    return_v: bool = False,
    time_major: bool = False,
    out: torch.Tensor | None = None,
    h_out: torch.Tensor | None = None,
    bits_out: torch.Tensor | None = None,
):
    """Spikes of the LIF layer for ``x`` of shape ``[B, T, ...]`` and the state the backward needs.

    Returns ``(spikes, h)``, or ``(spikes, h, v)`` when ``return_v``: spikes in ``x.dtype`` and
    shape; the pre-reset potential ``h`` (fp32 for fp32 input, threshold-consistently rounded
    ``x.dtype`` otherwise), or ``None`` when ``save_h`` is False; the final potential ``v`` in fp32
    (the kernel's own precision, so that a chunked sequence continues exactly). ``tau``/``thresh``:
    numbers or tensors broadcastable over ``x.shape[2:]``; ``v0``: initial potential of one step's
    shape (may be a broadcast view). ``spec``: the neuron's options (``gamma`` is only checked
    here: the forward does not use the surrogate). ``out`` / ``h_out`` may supply the output
    buffers (any strides that view as ``[B, T, N]``); ``time_major`` allocates them ``[T, B, ...]``.
    ``bits_out``: a uint8 ``[B, T, ceil(N/8)]`` tensor (unit last stride) that the kernel also fills
    with the spikes bit-packed (:mod:`snn.spikebits`; for :mod:`snn.memory`).
    """
    _check_input(x)
    tau, thresh, gamma = _check_params(tau, thresh, gamma)
    spec = _spec_of(gamma, spec)
    B, T = x.shape[0], x.shape[1]
    neuron_shape = x.shape[2:]
    N = math.prod(neuron_shape)
    h_dtype = saved_h_dtype(x.dtype, spec)

    spikes = _output_buffer(x.shape, x.dtype, x.device, time_major) if out is None else out
    s3 = _check_out(spikes, "out", x.shape, x.dtype, x.device, B, T, N)
    h = None
    if save_h:
        h = _output_buffer(x.shape, h_dtype, x.device, time_major) if h_out is None else h_out
        h3 = _check_out(h, "h_out", x.shape, h_dtype, x.device, B, T, N)
    v = _output_buffer((B, *neuron_shape), torch.float32, x.device) if return_v else None
    if x.numel() == 0:
        if return_v:
            v.copy_(v0 if v0 is not None else torch.zeros_like(v))
            return spikes, h, v
        return spikes, h
    if not save_h:
        h3 = s3  # placeholder pointer, never written (SAVE_H=False)

    tau_vec = _neuron_vector(tau, neuron_shape, x.device)
    thresh_vec = _neuron_vector(thresh, neuron_shape, x.device)
    bounds = None
    if thresh_vec is not None and save_h and h_dtype != torch.float32:
        bounds = torch.stack(_side_bounds(thresh_vec, h_dtype)).to(x.device)
    x3 = _as_3d(x, B, T, N)
    v0_2d = None if v0 is None else _as_2d(v0, B, N)
    kernel, args, constexprs = _fwd_launch(
        x3, s3, h3, B, T, N, tau, thresh, save_h, spec,
        tau_vec=tau_vec, thresh_vec=thresh_vec, bounds=bounds, v0=v0_2d, v_out=None if v is None else v.view(B, N),
        bits=None if bits_out is None else _check_bits(bits_out, B, T, N, x.device),
    )
    _launch(kernel, B, N, args, constexprs)
    return (spikes, h, v) if return_v else (spikes, h)


def lif_backward(
    grad_spikes: torch.Tensor | None,
    h: torch.Tensor,
    tau,
    thresh,
    gamma: float | None = None,
    *,
    spec: LIFSpec | None = None,
    grad_v: torch.Tensor | None = None,
    v0: torch.Tensor | None = None,
    need_tau: bool = False,
    need_thresh: bool = False,
    need_v0: bool = False,
    grad_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
):
    """Gradients given the spikes' gradient and the ``h`` saved by :func:`lif_forward`.

    Returns ``grad_x`` (a new tensor of ``h``'s shape and of the input's dtype ``grad_dtype``,
    default ``h.dtype``; ``out`` may supply it), or
    ``(grad_x, grad_tau, grad_thresh, grad_v0)`` when any of ``need_*`` is set (None where not
    needed). ``grad_spikes`` may be None when only the final potential has a gradient (``grad_v``).
    Reads but never writes ``h``, so a retained graph can run the backward again.
    """
    _check_input(h, "h")
    grad_dtype = h.dtype if grad_dtype is None else grad_dtype
    if grad_spikes is None:
        grad_spikes = torch.zeros((), dtype=grad_dtype, device=h.device).expand(h.shape)
    _check_input(grad_spikes, "grad_spikes")
    tau, thresh, gamma = _check_params(tau, thresh, gamma)
    spec = _spec_of(gamma, spec)
    if grad_spikes.shape != h.shape or grad_spikes.device != h.device:
        raise _error(
            ValueError,
            f"grad_spikes {tuple(grad_spikes.shape)} on {grad_spikes.device} does not match "
            f"the saved potential {tuple(h.shape)} on {h.device}",
        )
    B, T = h.shape[0], h.shape[1]
    neuron_shape = h.shape[2:]
    N = math.prod(neuron_shape)
    grad_x = _output_buffer(h.shape, grad_dtype, h.device) if out is None else out
    gx3 = _check_out(grad_x, "out", h.shape, grad_dtype, h.device, B, T, N)
    extras = need_tau or need_thresh or need_v0
    if h.numel() == 0:
        if not extras:
            return grad_x
        zeros = (lambda p: None if not isinstance(p, torch.Tensor) else torch.zeros_like(p))
        return grad_x, zeros(tau) if need_tau else None, zeros(thresh) if need_thresh else None, \
            (torch.zeros_like(v0) if need_v0 else None)

    tile_rows = triton.cdiv(B, _block_config(B, N)[0])
    partial = (lambda need: _output_buffer((tile_rows, N), torch.float32, h.device) if need else None)
    grad_tau_rows, grad_thresh_rows = partial(need_tau), partial(need_thresh)
    grad_v0 = _output_buffer((B, N), torch.float32, h.device) if need_v0 else None
    gs3 = _as_3d(grad_spikes, B, T, N)
    h3 = _as_3d(h, B, T, N)
    kernel, args, constexprs = _bwd_launch(
        gs3, h3, gx3, B, T, N, tau, thresh, spec=spec,
        tau_vec=_neuron_vector(tau, neuron_shape, h.device), thresh_vec=_neuron_vector(thresh, neuron_shape, h.device),
        grad_v=None if grad_v is None else _as_2d(grad_v, B, N), v0=None if v0 is None or not (need_tau or (need_thresh and spec.reset == "subtract_next"))
        else _as_2d(v0, B, N),
        grad_v0=grad_v0, grad_tau=grad_tau_rows, grad_thresh=grad_thresh_rows,
    )
    _launch(kernel, B, N, args, constexprs)
    if not extras:
        return grad_x
    return (
        grad_x,
        None if grad_tau_rows is None else _reduce_to_param(grad_tau_rows, tau, neuron_shape),
        None if grad_thresh_rows is None else _reduce_to_param(grad_thresh_rows, thresh, neuron_shape),
        None if grad_v0 is None else grad_v0.view(B, *neuron_shape).to(v0.dtype),
    )


def _as_2d(t: torch.Tensor, B: int, N: int) -> torch.Tensor:
    """One step's [B, ...] tensor (possibly broadcast) as a [B, N] view, or a contiguous copy."""
    try:
        return t.view(B, N)
    except RuntimeError:
        return t.reshape(B, N)


# ----------------------------------------------------------------------------------------------
# registered operators (autograd, fake tensors, vmap: snn/lif/ops.py)
# ----------------------------------------------------------------------------------------------


def _op_forward(x, tau, thresh, spec: LIFSpec, v0, save_h: bool, return_v: bool, time_major: bool):
    outputs = lif_forward(x, tau, thresh, spec=spec, save_h=save_h, v0=v0, return_v=return_v, time_major=time_major)
    return outputs[0], outputs[1], (outputs[2] if return_v else None)


def _op_backward(grad_spikes, h, tau, thresh, spec: LIFSpec, grad_v, v0, need_tau: bool, need_thresh: bool,
                 need_v0: bool, grad_dtype: torch.dtype, time_major: bool):
    out = _output_buffer(h.shape, grad_dtype, h.device, time_major)
    grads = lif_backward(grad_spikes, h, tau, thresh, spec=spec, grad_v=grad_v, v0=v0, need_tau=need_tau,
                         need_thresh=need_thresh, need_v0=need_v0, grad_dtype=grad_dtype, out=out)
    return grads if isinstance(grads, tuple) else (grads, None, None, None)


# The registered operators snn::lif_fwd_triton / snn::lif_bwd_triton around the launchers (looked up at
# call time, so tests can wrap them); ``h`` is saved in :func:`saved_h_dtype`, the final ``v`` in fp32.
# On CUDA, Inductor sees one opaque op per direction (not torch.library.triton_op: the launchers do
# host-side work per call, e.g. the 16-bit side bounds, that is not traceable).
_triton_core = register_lif_ops(
    "triton", _op_forward, _op_backward,
    h_dtype=saved_h_dtype, v_dtype=torch.float32, check=_check_input,
)

# Spikes of a LIF layer (the neuron of snn.lif.spec), fused into one kernel per direction.
lif_triton = make_lif_function(_triton_core, "lif_triton", h_gradient=differentiable_h)
