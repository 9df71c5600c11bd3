"""The LIF contenders (benchmarks/README.md lists them), all computing ``lif_reference``'s function on the same inputs.

``compute`` names the references a contender's spikes must equal exactly: ``"input"`` (the reference at
the input dtype) or ``"fp32"`` (on the fp32 upcast: the fused kernels keep the potential in fp32);
torch.compile may meet either. SpikingJelly mapping (``decay_input=False``, hard reset to 0):
``H = V (1 - 1/tau) + X`` gives ``tau = 1 / (1 - 0.5) = 2``; its ``H >= v_threshold`` differs from our
``>`` only where ``H == thresh`` (``tie_tolerant``); ``detach_reset=False`` is our reset;
``PiecewiseQuadratic(alpha=1)``'s derivative is our triangle. It gets its native ``[T, B*N]`` layout,
prepared outside the timed region.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from benchmarks.common import GAMMA, TAU, THRESH
from snn.kernels.lif.cpu_launch import lif_torch
from snn.lif.eager import lif_eager
from snn.lif.reference import lif_reference, lif_reference_unbind
from snn.lif.spec import LIFSpec


class Unavailable(Exception):
    """This contender cannot run here; the message says why (it becomes the skip reason)."""


@dataclass
class Runner:
    """A contender bound to one input: ``forward()`` returns spikes in its native layout."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor  # native layout, a leaf that requires grad
    g: torch.Tensor  # upstream gradient, native layout
    to_btn: Callable[[torch.Tensor], torch.Tensor] = lambda t: t  # native -> [B, T, N]
    info: dict = field(default_factory=dict)  # what actually ran (backend, surrogate, compile time)

    def forward(self) -> torch.Tensor:
        return self.fn(self.x)

    def forward_backward(self) -> torch.Tensor:
        return torch.autograd.grad(self.fn(self.x), self.x, self.g)[0]


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    compute: tuple[str, ...]
    make: Callable[[torch.Tensor, torch.Tensor], Runner]
    timed_on_cpu: bool = True
    cuda_only: bool = False
    tie_tolerant: bool = False


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _eager(fn):
    return lambda x, g: Runner(fn=functools.partial(fn, tau=TAU, thresh=THRESH, gamma=GAMMA), x=_leaf(x), g=g)


class SeedZIF(torch.autograd.Function):
    """The seed's ``ZIF``: ``(z > 0)`` forward, ``max(0, gamma - |z|) / gamma**2`` backward."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * ((GAMMA - z.abs()).clamp(min=0) * (1.0 / GAMMA / GAMMA))


SEED_SPEC = LIFSpec(surrogate=SeedZIF)


def seed_lif(x: torch.Tensor) -> torch.Tensor:
    """The seed's LIF as the seed wrote it: ``lif_reference``'s loop with the ``ZIF`` Function."""
    return lif_reference(x, TAU, THRESH, spec=SEED_SPEC)


def _timed_compile(runner: Runner, warm_calls: int = 1) -> Runner:
    start = time.perf_counter()
    for _ in range(warm_calls):
        runner.forward_backward()
    if runner.x.is_cuda:
        torch.cuda.synchronize(runner.x.device)
    runner.info["compile_seconds"] = round(time.perf_counter() - start, 2)
    return runner


def _make_compiled(x: torch.Tensor, g: torch.Tensor) -> Runner:
    torch._dynamo.reset()  # one specialised compilation per case; no recompile limit across cases
    return _timed_compile(Runner(fn=torch.compile(seed_lif, dynamic=False, fullgraph=True), x=_leaf(x), g=g))


def _make_triton(x: torch.Tensor, g: torch.Tensor) -> Runner:
    try:
        from snn.kernels import INTERPRETED, lif_triton
    except ImportError as exc:
        raise Unavailable(f"kernels.lif_triton could not be imported ({exc})") from exc
    return Runner(fn=functools.partial(lif_triton, tau=TAU, thresh=THRESH, gamma=GAMMA), x=_leaf(x), g=g,
                  info={"interpreted": bool(INTERPRETED)})


# ---- SpikingJelly --------------------------------------------------------------------------------

SJ_PROVIDER_ENV = "SJ_LIF_CUDA_IMPLEMENTATION"  # SpikingJelly >= 2 picks its CUDA provider at import
SJ_NODE_ARGS = dict(tau=1.0 / (1.0 - TAU), decay_input=False, v_threshold=THRESH, v_reset=0.0, detach_reset=False, step_mode="m")


def _import_spikingjelly():
    if "spikingjelly" not in sys.modules:
        os.environ.setdefault(SJ_PROVIDER_ENV, "triton")
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except Exception as exc:  # ImportError, or a missing dependency raising something else
        raise Unavailable(f"spikingjelly is not importable ({type(exc).__name__}: {exc}); on the GPU machine put its "
                          "wheel (and loguru's) in .whl/ (benchmarks/README.md)") from exc
    return neuron, surrogate, functional, importlib.metadata.version("spikingjelly")


def sj_native(x: torch.Tensor, g: torch.Tensor):
    """Input and gradient in SpikingJelly's ``[T, B*N]`` (copies), and the map of its output back to ``[B, T, N]``."""
    B, T, N = x.shape
    native = lambda t: t.transpose(0, 1).contiguous().reshape(T, B * N)  # noqa: E731
    return _leaf(native(x)), native(g), lambda s: s.reshape(T, B, N).transpose(0, 1)


def _sj_runner(node, functional, x, g, **kw) -> Runner:
    call = kw.pop("call", node)

    def run(x_seq):
        functional.reset_net(node)  # stateful: every call starts from v = 0
        return call(x_seq)

    x_native, g_native, to_btn = sj_native(x, g)
    return Runner(fn=run, x=x_native, g=g_native, to_btn=to_btn, **kw)


def sj_reference_runner(x: torch.Tensor, g: torch.Tensor, compiled: bool = False) -> Runner:
    """SpikingJelly's LIFNode on the path it picks for the device (its CPU path here: checks the mapping,
    never timed); ``compiled``: under ``torch.compile`` (``sj-compiled``)."""
    neuron, surrogate, functional, version = _import_spikingjelly()
    node = neuron.LIFNode(**SJ_NODE_ARGS, surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0)).to(x.device)
    if compiled:
        torch._dynamo.reset()
    call = torch.compile(node, dynamic=False) if compiled else node
    return _sj_runner(node, functional, x, g, call=call, info={"spikingjelly": version})


def _make_sj_compiled(x: torch.Tensor, g: torch.Tensor) -> Runner:
    return _timed_compile(sj_reference_runner(x, g, compiled=True), warm_calls=2)  # 2nd call: guards settle


def _make_sj_triton(x: torch.Tensor, g: torch.Tensor) -> Runner:
    """SpikingJelly 2's LIFNode on its Triton provider (chosen by SJ_LIF_CUDA_IMPLEMENTATION at import)."""
    neuron, surrogate, functional, version = _import_spikingjelly()
    info = {"spikingjelly": version}
    pq = surrogate.PiecewiseQuadratic(alpha=1.0)
    node = neuron.LIFNode(**SJ_NODE_ARGS, surrogate_function=pq).to(x.device)
    if x.dtype != torch.float32:  # 16-bit takes its Triton path only with an explicit neuron precision
        try:
            from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

            name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[x.dtype]
            config = PrecisionConfig(mode=name, neuron_storage=name, neuron_fwd="fp32", neuron_bwd="fp32")
            node = getattr(prepare_model_for_precision(node, x.device, config), "model", node)
            info["precision"] = f"neuron_storage={name}, fwd/bwd compute fp32"
        except Exception as exc:
            raise Unavailable(f"spikingjelly {version}: no Triton path for {x.dtype} ({type(exc).__name__}: {exc})"[:400]) from exc
    node(sj_native(x, g)[0].detach())
    try:  # which provider really ran (private API; say so when it cannot be read)
        from spikingjelly._ops.lif import _selection

        info["backend"] = _selection.diagnostics(x.device)["implementation"]
    except Exception as exc:
        info["backend"] = f"unverified ({type(exc).__name__})"
    if info["backend"] != "triton" and not info["backend"].startswith("unverified"):
        raise Unavailable(f"spikingjelly {version} selected its {info['backend']!r} provider, not 'triton' "
                          f"({SJ_PROVIDER_ENV}={os.environ.get(SJ_PROVIDER_ENV)!r})")
    return _sj_runner(node, functional, x, g, info=info)


CONTENDERS: tuple[Contender, ...] = (
    Contender("seed-index", "seed loop x[:, t], eager (reference)", ("input",), _eager(lif_reference)),
    Contender("seed-unbind", "seed loop unbind, eager", ("input",), _eager(lif_reference_unbind)),
    Contender("seed-compiled", "torch.compile(seed loop)", ("fp32", "input"), _make_compiled),
    Contender("ours-eager", "ours: eager backend (hand-written backward)", ("input",), _eager(lif_eager)),
    Contender("ours-cpu-fused", "ours: torch backend (fused C kernel on CPU)", ("input",), _eager(lif_torch)),
    Contender("sj-compiled", "torch.compile(SpikingJelly LIFNode)", ("fp32", "input"), _make_sj_compiled, tie_tolerant=True),
    Contender("ours-triton", "ours: Triton kernel", ("fp32",), _make_triton, timed_on_cpu=False),
    Contender("sj-triton", "SpikingJelly triton", ("fp32",), _make_sj_triton, cuda_only=True, tie_tolerant=True),
)
ORDER = [c.key for c in CONTENDERS]
REFERENCE, COMPILED, OURS_GPU, OURS_CPU = "seed-index", "seed-compiled", "ours-triton", "ours-cpu-fused"
