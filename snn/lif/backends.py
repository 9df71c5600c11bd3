"""The one place that maps a backend name to a LIF implementation and says what each supports.

Every implementation has the signature of :func:`snn.lif.spec.make_lif_function` (the neuron and
its options are specified in :mod:`snn.lif.spec`). ``train.py``, ``infer.py``, the layer module and
the model only pass the name through. A new backend is one module plus one entry here; a backend
with its own forward and backward registers them as PyTorch operators with one call to
:func:`snn.lif.ops.register_lif_ops` (what torch.compile, torch.export and torch.func need).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from snn.errors import UserError
from snn.lif.spec import CUSTOM_SURROGATE, LIFSpec

LIFFunction = Callable[..., torch.Tensor]


# Everything a call can ask beyond the seed's neuron, by the name a refusal uses.
FEATURES = (
    "reset='soft'", "reset='subtract_next'", "v_reset", "detach_reset", "surrogate='sigmoid'", "surrogate='atan'",
    "surrogate='rectangle'", "surrogate='fast_sigmoid'", CUSTOM_SURROGATE, "tensor tau/thresh", "v0", "return_v",
    "return_h", "time_dim=0",
)
# A spike function of the user's needs autograd of it (snn.lif.spec.custom_surrogate_gradient): the fused kernels cannot call it.
_FUSED = frozenset(FEATURES) - {CUSTOM_SURROGATE}


def features_used(spec: LIFSpec, *, tensor_params=False, v0=False, return_v=False, return_h=False,
                  time_dim=1) -> frozenset[str]:
    """The :data:`FEATURES` a call with these options needs (cached per spec and flags)."""
    flags = (bool(tensor_params), bool(v0), bool(return_v), bool(return_h), time_dim == 0)
    if torch.compiler.is_compiling():  # traced once per graph: the cache would only earn Dynamo's warning about it
        return _features_of_spec.__wrapped__(spec, *flags)
    try:
        return _features_of_spec(spec, *flags)
    except TypeError:  # an unhashable spike function: not cached
        return _features_of_spec.__wrapped__(spec, *flags)


@functools.lru_cache(maxsize=1024)
def _features_of_spec(spec: LIFSpec, tensor_params: bool, v0: bool, return_v: bool, return_h: bool,
                      time_major: bool) -> frozenset[str]:
    used = {CUSTOM_SURROGATE if spec.custom else f"surrogate={spec.surrogate!r}"} - {"surrogate='triangle'"}
    used |= {name for name, on in (
        ("reset='soft'", spec.reset == "soft"), ("reset='subtract_next'", spec.reset == "subtract_next"), ("v_reset", spec.v_reset != 0.0), ("detach_reset", spec.detach_reset),
        ("tensor tau/thresh", tensor_params), ("v0", v0), ("return_v", return_v), ("return_h", return_h),
        ("time_dim=0", time_major),
    ) if on}
    return frozenset(used)


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    dtypes: tuple[torch.dtype, ...]
    devices: tuple[str, ...]  # torch device types the implementation runs on
    features: frozenset[str] = frozenset(FEATURES)  # which of FEATURES it implements
    # True: computes in fp32 whatever the input dtype (its 16-bit spikes are the fp32 reference's
    # on the rounded input). False: computes in the input dtype, like the reference.
    accumulates_in_fp32: bool = False


_ALL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REGISTRY = {
    "torch": Backend("torch", "fused C kernel on the CPU (fp32/bf16/fp16; kernels/lif/cpu_launch.py), eager PyTorch elsewhere; on the CPU saves its input x only, elsewhere h",
                     _ALL_FLOATS, ("cpu", "cuda", "mps"), _FUSED),
    "eager": Backend("eager", "plain PyTorch, hand-written backward (one op per step; what the torch backend runs off the CPU)",
                     _ALL_FLOATS, ("cpu", "cuda", "mps")),
    "triton": Backend("triton", "fused Triton kernels (CUDA; the CPU runs them in Triton's interpreter)",
                      (torch.float16, torch.bfloat16, torch.float32), ("cuda", "cpu"), _FUSED, accumulates_in_fp32=True),
    "reference": Backend("reference", "the seed's per-step loop under eager autograd (the definition)", _ALL_FLOATS, ("cpu", "cuda", "mps")),
}
BACKENDS = tuple(REGISTRY)


def _load_triton() -> LIFFunction:
    try:
        import triton  # noqa: F401  (only to tell a missing package from a broken kernel module)
    except ImportError as exc:
        raise UserError(
            f"backend 'triton' needs the 'triton' package, which could not be imported ({exc}); "
            "install it (pip install -e .) or use --backend torch."
        ) from exc
    from snn.kernels import lif_triton  # a failure here is a bug in kernels/: let its traceback show

    return lif_triton


def get_backend(name: str) -> Backend:
    """The registry entry for ``name``, or one sentence listing the names there are."""
    if name not in REGISTRY:
        raise UserError(f"unknown backend {name!r}; supported backends are: {', '.join(BACKENDS)}.")
    return REGISTRY[name]


# name -> the implementation, once loaded (no import statement on the per-call path). Not 'triton',
# whose loader checks each time that the package imports.
_LOADED: dict[str, LIFFunction] = {}


def get_lif_function(name: str) -> LIFFunction:
    """Return the LIF implementation registered under ``name`` (one of :data:`BACKENDS`)."""
    fn = _LOADED.get(name)
    if fn is None:
        get_backend(name)
        fn = _load(name)
        if name != "triton":
            _LOADED[name] = fn
    return fn


def _load(name: str) -> LIFFunction:
    if name == "torch":
        # The fused C kernel on CPU tensors (built at first use; the eager code, with one warning,
        # where no C compiler is found), the eager code below on other devices and for fp64.
        from snn.kernels.lif.cpu_launch import lif_torch

        return lif_torch
    if name == "eager":
        # Plain PyTorch with a hand-written backward: bit-identical to autograd of the seed's loop
        # (snn.lif.reference.lif_reference, tests/test_lif_contract.py), at a fraction of its ops and memory.
        from snn.lif.eager import lif_eager

        return lif_eager
    if name == "reference":
        from snn.lif.reference import lif_reference

        return lif_reference
    return _load_triton()


# name -> (the Backend entry the calls were checked against, the (features, dtype, device) it passed): a call
# of the same options, dtype and device type is not checked again (per forward this is one set lookup).
_PASSED: dict[str, tuple[Backend, set]] = {}


def check_supported(name: str, features=(), dtype: torch.dtype | None = None, device=None) -> None:
    """Refuse, in one sentence, options (:func:`features_used`), a dtype or a device ``name`` cannot run."""
    key = (features if type(features) is frozenset else frozenset(features), dtype, getattr(device, "type", device))
    passed = _PASSED.get(name)
    if passed is not None and passed[0] is REGISTRY.get(name) and key in passed[1]:
        return
    backend = get_backend(name)
    missing = sorted(set(features) - backend.features)
    if missing:
        others = [n for n, b in REGISTRY.items() if set(features) <= b.features]
        raise UserError(f"backend {name!r} does not implement {', '.join(missing)}; use {' or '.join(others)}.")
    if dtype is not None and dtype not in backend.dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in backend.dtypes)
        raise UserError(f"backend {name!r} supports {names}; got {str(dtype).replace('torch.', '')}.")
    if device is not None and torch.device(device).type not in backend.devices:
        raise UserError(f"backend {name!r} runs on {', '.join(backend.devices)}; got {device}.")
    if passed is None or passed[0] is not backend:
        passed = _PASSED[name] = (backend, set())
    if len(passed[1]) < 4096:
        passed[1].add(key)
