"""The LIF contenders, all computing ``snn.lif.reference.lif_reference``'s function on the same inputs.

====  ====================  ====================================================================
key   contender             notes
====  ====================  ====================================================================
c1    eager ``x[:, t]``     ``snn.lif.reference.lif_reference``, the seed-faithful loop (the definition)
c2    eager ``unbind``      ``snn.lif.reference.lif_reference_unbind``
c3    ``torch.compile``     of the seed's LIF as the seed wrote it (:func:`seed_lif`: the loop with
                            its ``ZIF`` ``autograd.Function``, which Dynamo traces and Inductor fuses;
                            default mode, ``dynamic=False``, one compilation per shape and dtype,
                            done before timing)
c3b   our eager backend     ``snn.lif.eager.lif_torch`` (plain PyTorch, hand-written backward; backend
                            ``eager``, what ``torch`` ran on the CPU before the fused kernel)
c3c   our torch backend     ``snn.kernels.lif.cpu_launch.lif_torch_fused``: the fused C kernel on CPU tensors
                            (``kernels/lif/lif_cpu.c``; built once before timing, not timed)
c4    Triton (ours)         ``kernels.lif_spike``; on CPU it runs in the Triton interpreter, so it
                            is checked for correctness there but never timed
c5    SpikingJelly          multi-step ``LIFNode``, ``triton`` and ``cupy`` backends, CUDA only
c5c   SpikingJelly compiled ``torch.compile`` of the same ``LIFNode`` on its PyTorch path, any device
                            (where spikingjelly imports; skipped with the reason elsewhere)
====  ====================  ====================================================================

A contender turns our ``[B, T, N]`` input ``x`` and upstream gradient ``g`` into a :class:`Runner`
holding its own input in its native layout (prepared outside any timed region) and the function
to call. ``compute`` names the references its spikes must equal exactly: ``"input"`` (c1 run at
the input dtype: the eager contenders) or ``"fp32"`` (c1 on the fp32 upcast of the input: the
fused contenders keep the potential in fp32 whatever the storage dtype). For fp32 inputs the two
are the same thing. ``torch.compile`` may do either (Inductor computes bf16 pointwise chains in
fp32 but rounds what it materialises), so either is accepted for it and the one met is recorded.

SpikingJelly mapping (its docs, ``decay_input=False``, hard reset to ``v_reset = 0``)::

    H = V - (V - v_reset) / tau + X = V * (1 - 1/tau) + X       -> tau = 1 / (1 - 0.5) = 2.0
    S = (H >= v_threshold)                                        -> ours is H > thresh: the two
                                                                     differ only where H == thresh
    V = H * (1 - S) + v_reset * S,  detach_reset=False            -> our reset, gradient included

with ``surrogate.PiecewiseQuadratic(alpha=1)``, whose derivative ``max(0, 1 - |H - thresh|)`` is
our triangle with ``gamma = 1``, where the backend supports it. Its layout is time-major, so it is
fed ``x.transpose(0, 1)`` made contiguous and flattened to ``[T, B*N]`` *outside* the timed region
(its native layout, the fair setting), and its spikes are transposed back only for the check.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from benchmarks.common import GAMMA, TAU, THRESH
from snn.lif.reference import lif_reference, lif_reference_unbind
from snn.kernels.lif.cpu_launch import lif_torch_fused
from snn.lif.eager import lif_torch


class Unavailable(Exception):
    """This contender cannot run here; the message says why (it becomes the skip reason)."""


@dataclass
class Runner:
    """A contender bound to one input: ``forward()`` returns spikes in its native layout."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor  # native layout, a leaf that requires grad
    g: torch.Tensor  # upstream gradient, native layout
    to_btn: Callable[[torch.Tensor], torch.Tensor] = lambda t: t  # native -> [B, T, N]
    info: dict = field(default_factory=dict)  # what was actually run (backend, surrogate, compile time)
    compare_grad: bool = True  # False when the backward uses a different surrogate

    def forward(self) -> torch.Tensor:
        return self.fn(self.x)

    def forward_backward(self) -> torch.Tensor:
        (grad,) = torch.autograd.grad(self.fn(self.x), self.x, self.g)
        return grad


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    compute: tuple[str, ...]  # references its spikes may equal exactly, expected first (module docstring)
    make: Callable[[torch.Tensor, torch.Tensor], Runner]
    timed_on_cpu: bool = True
    cuda_only: bool = False
    tie_tolerant: bool = False  # >= threshold: may differ where the potential equals the threshold


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _eager(fn) -> Callable[[torch.Tensor, torch.Tensor], Runner]:
    def make(x: torch.Tensor, g: torch.Tensor) -> Runner:
        return Runner(fn=functools.partial(fn, tau=TAU, thresh=THRESH, gamma=GAMMA), x=_leaf(x), g=g)

    return make


class SeedZIF(torch.autograd.Function):
    """The seed's ``ZIF``: ``(z > 0)`` forward, ``max(0, gamma - |z|) / gamma**2`` backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, gamma: float) -> torch.Tensor:
        spike = (z > 0).to(z.dtype)
        ctx.save_for_backward(z, spike)
        ctx.gamma = gamma
        return spike

    @staticmethod
    def backward(ctx, grad_spike: torch.Tensor):
        z, _spike = ctx.saved_tensors
        gamma = ctx.gamma
        return grad_spike * ((gamma - z.abs()).clamp(min=0) * (1.0 / gamma / gamma)), None


def seed_lif(x: torch.Tensor, tau: float = TAU, thresh: float = THRESH, gamma: float = GAMMA) -> torch.Tensor:
    """The seed's LIF loop, literally: what contender 3 compiles.

    ``lif_reference`` computes the same function, but since the operator work (issue 10) its spike
    is the registered op ``snn::surrogate_spike`` (so torch.func and export see one op), which
    Inductor cannot fuse: compiling it gives six opaque calls per step, a far slower and so unfair
    baseline (measured 1.3 ms against 0.5 ms for this loop at B=128, one thread). A user who
    compiles the seed compiles this.
    """
    mem = torch.zeros_like(x[:, 0])
    spikes = []
    for t in range(x.shape[1]):
        mem = mem * tau + x[:, t]
        spike = SeedZIF.apply(mem - thresh, gamma)
        mem = (1 - spike) * mem
        spikes.append(spike)
    return torch.stack(spikes, dim=1)


def _make_compiled(x: torch.Tensor, g: torch.Tensor) -> Runner:
    """torch.compile of the seed's LIF, compiled (forward and backward) and warmed before return.

    Dynamo's caches are reset first: each case gets its own specialised compilation and no
    recompile limit is hit across the many shapes and dtypes of one session.
    """
    torch._dynamo.reset()
    start = time.perf_counter()
    try:
        compiled = torch.compile(seed_lif, dynamic=False, fullgraph=True)
        fullgraph = True
        runner = Runner(fn=functools.partial(compiled, tau=TAU, thresh=THRESH, gamma=GAMMA), x=_leaf(x), g=g)
        runner.forward_backward()
    except Exception as exc:  # a graph break: compile what dynamo can and say so
        torch._dynamo.reset()
        compiled = torch.compile(seed_lif, dynamic=False)
        fullgraph = False
        runner = Runner(fn=functools.partial(compiled, tau=TAU, thresh=THRESH, gamma=GAMMA), x=_leaf(x), g=g)
        runner.forward_backward()
        runner.info["fullgraph_error"] = f"{type(exc).__name__}: {exc}"[:300]
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    runner.info.update(compile_seconds=round(time.perf_counter() - start, 2), fullgraph=fullgraph, mode="default")
    return runner


def _make_triton(x: torch.Tensor, g: torch.Tensor) -> Runner:
    try:
        from snn.kernels import INTERPRETED, lif_spike
    except ImportError as exc:
        raise Unavailable(f"kernels.lif_spike could not be imported ({exc})") from exc
    runner = Runner(fn=functools.partial(lif_spike, tau=TAU, thresh=THRESH, gamma=GAMMA), x=_leaf(x), g=g)
    runner.info["interpreted"] = bool(INTERPRETED)
    return runner


# ----------------------------------------------------------------------------------------------
# SpikingJelly
# ----------------------------------------------------------------------------------------------

SJ_TAU = 1.0 / (1.0 - TAU)  # 2.0 for our decay 0.5 (module docstring)
SJ_PROVIDER_ENV = "SJ_LIF_CUDA_IMPLEMENTATION"  # SpikingJelly >= 2: picks the CUDA provider at import


def _import_spikingjelly():
    """Import SpikingJelly (>= 2 reads its provider choice at import: ask for its Triton one)."""
    if "spikingjelly" not in sys.modules:
        os.environ.setdefault(SJ_PROVIDER_ENV, "triton")
    try:
        import spikingjelly  # noqa: F401
        from spikingjelly.activation_based import functional, neuron, surrogate
    except Exception as exc:  # ImportError, or a missing dependency raising something else
        raise Unavailable(
            f"spikingjelly is not importable ({type(exc).__name__}: {exc}); on the GPU machine put its wheel "
            "(and loguru's; cupy's for the cupy backend) in .whl/ (benchmarks/README.md)"
        ) from exc
    return neuron, surrogate, functional


def _sj_version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("spikingjelly")
    except Exception:
        return "unknown"


# Our dynamics in SpikingJelly's terms (module docstring); the surrogate is passed separately.
SJ_NODE_ARGS = dict(tau=SJ_TAU, decay_input=False, v_threshold=THRESH, v_reset=0.0, detach_reset=False, step_mode="m")


def sj_native(x: torch.Tensor, g: torch.Tensor):
    """Our ``[B, T, N]`` input and gradient in SpikingJelly's time-major ``[T, B*N]`` layout (copies,
    made outside any timed region), and the map from its ``[T, B*N]`` output back to ``[B, T, N]``."""
    B, T, N = x.shape
    x_native = _leaf(x.transpose(0, 1).contiguous().reshape(T, B * N))
    g_native = g.transpose(0, 1).contiguous().reshape(T, B * N)
    return x_native, g_native, lambda s: s.reshape(T, B, N).transpose(0, 1)


def sj_reference_runner(x: torch.Tensor, g: torch.Tensor, compiled: bool = False) -> Runner:
    """SpikingJelly's LIFNode on whatever path it picks for the device (its CPU path here): used to
    check the mapping above on CPU; never timed. ``compiled``: the node under ``torch.compile``
    (contender 5c); its state is reset outside the compiled region before every call."""
    neuron, surrogate, functional = _import_spikingjelly()
    node = neuron.LIFNode(**SJ_NODE_ARGS, surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0)).to(x.device)
    x_native, g_native, to_btn = sj_native(x, g)
    if compiled:
        torch._dynamo.reset()
    call = torch.compile(node, dynamic=False) if compiled else node

    def run(x_seq: torch.Tensor) -> torch.Tensor:
        functional.reset_net(node)
        return call(x_seq)

    return Runner(fn=run, x=x_native, g=g_native, to_btn=to_btn, info={"spikingjelly": _sj_version()})


def _make_spikingjelly(backend: str) -> Callable[[torch.Tensor, torch.Tensor], Runner]:
    def make(x: torch.Tensor, g: torch.Tensor) -> Runner:
        if not x.is_cuda:
            raise Unavailable(f"SpikingJelly's {backend} backend needs CUDA")
        neuron, surrogate, functional = _import_spikingjelly()
        x_native, g_native, to_btn = sj_native(x, g)
        common = SJ_NODE_ARGS
        version = _sj_version()
        params = inspect.signature(neuron.LIFNode.__init__).parameters
        info = {"spikingjelly": version, "layout": "[T, B*N], prepared outside the timed region"}

        if "backend" in params:  # SpikingJelly <= 0.0.0.1.x: the backend is chosen per node
            if backend == "cupy":
                try:
                    import cupy  # noqa: F401
                except Exception as exc:
                    raise Unavailable(f"cupy is not importable ({type(exc).__name__}: {exc})") from exc
            node = None
            for surrogate_fn, same_surrogate in ((surrogate.PiecewiseQuadratic(alpha=1.0), True), (surrogate.Sigmoid(), False)):
                try:
                    candidate = neuron.LIFNode(**common, surrogate_function=surrogate_fn, backend=backend).to(x.device)
                    if backend not in candidate.supported_backends:
                        raise Unavailable(f"spikingjelly {version} LIFNode(step_mode='m') has backends {candidate.supported_backends}, not {backend!r}")
                    functional.reset_net(candidate)
                    candidate(x_native.detach()[:, :1])  # generates/compiles its kernel for this surrogate
                    functional.reset_net(candidate)
                    node, compare_grad = candidate, same_surrogate
                    info["surrogate"] = type(surrogate_fn).__name__ + ("" if same_surrogate else " (backend lacks PiecewiseQuadratic: gradients not compared)")
                    break
                except Unavailable:
                    raise
                except Exception as exc:
                    info.setdefault("tried", []).append(f"{type(surrogate_fn).__name__}: {type(exc).__name__}: {exc}"[:200])
            if node is None:
                raise Unavailable(f"spikingjelly {version} {backend} backend failed on {x.dtype}: {info.get('tried')}")
            info["backend"] = backend
        else:  # SpikingJelly >= 2: providers (cuda / triton / torch) picked by SJ_LIF_CUDA_IMPLEMENTATION
            if backend == "cupy":
                raise Unavailable(f"spikingjelly {version} has no cupy backend (its CUDA providers are 'cuda', 'triton', 'torch')")
            node = neuron.LIFNode(**common, surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0)).to(x.device)
            compare_grad = True
            info["surrogate"] = "PiecewiseQuadratic(alpha=1)"
            if x.dtype != torch.float32:
                # 16-bit inputs take its Triton path only with an explicit neuron precision
                # (state stored in the input dtype, computed in fp32, as ours).
                try:
                    from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

                    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[x.dtype]
                    artifacts = prepare_model_for_precision(
                        node, x.device, PrecisionConfig(mode=name, neuron_storage=name, neuron_fwd="fp32", neuron_bwd="fp32")
                    )
                    node = getattr(artifacts, "model", node)
                    info["precision"] = f"neuron_storage={name}, fwd/bwd compute fp32"
                except Exception as exc:
                    raise Unavailable(f"spikingjelly {version}: no Triton path for {x.dtype} ({type(exc).__name__}: {exc})"[:400]) from exc
            functional.reset_net(node)
            node(x_native.detach())
            functional.reset_net(node)
            try:  # which provider really ran (private API; say so when it cannot be read)
                from spikingjelly._ops.lif import _selection

                provider = _selection.diagnostics(x.device)["implementation"]
            except Exception as exc:
                provider = f"unverified ({type(exc).__name__})"
            info["backend"] = provider
            if provider != "triton" and not provider.startswith("unverified"):
                raise Unavailable(f"spikingjelly {version} selected its {provider!r} provider, not 'triton' ({SJ_PROVIDER_ENV}={os.environ.get(SJ_PROVIDER_ENV)!r})")

        def run(x_seq: torch.Tensor) -> torch.Tensor:
            functional.reset_net(node)  # the node is stateful: every call starts from v = 0
            return node(x_seq)

        return Runner(fn=run, x=x_native, g=g_native, to_btn=to_btn, info=info, compare_grad=compare_grad)

    return make


def _make_sj_compiled(x: torch.Tensor, g: torch.Tensor) -> Runner:
    """``torch.compile`` of SpikingJelly's multi-step ``LIFNode`` on its plain-PyTorch path (any device):
    the issue's CPU goal. Compiled and warmed before return."""
    start = time.perf_counter()
    runner = sj_reference_runner(x, g, compiled=True)
    runner.info["layout"] = "[T, B*N], prepared outside the timed region"
    runner.forward_backward()
    runner.forward_backward()  # the second call runs with the state reset from a tensor: guards settle
    runner.info["compile_seconds"] = round(time.perf_counter() - start, 2)
    return runner


CONTENDERS: tuple[Contender, ...] = (
    Contender("c1-index", "1 eager x[:, t] (seed)", ("input",), _eager(lif_reference)),
    Contender("c2-unbind", "2 eager unbind", ("input",), _eager(lif_reference_unbind)),
    Contender("c3-compile", "3 torch.compile(seed LIF)", ("fp32", "input"), _make_compiled),
    Contender("c3b-torch-backend", "3b our eager backend (hand-written backward)", ("input",), _eager(lif_torch)),
    Contender("c3c-torch-fused", "3c our torch backend (fused C kernel on CPU)", ("input",), _eager(lif_torch_fused)),
    Contender("c5c-sj-compile", "5c torch.compile(SpikingJelly LIFNode)", ("fp32", "input"), _make_sj_compiled, tie_tolerant=True),
    Contender("c4-triton", "4 Triton (ours)", ("fp32",), _make_triton, timed_on_cpu=False),
    Contender("c5-sj-triton", "5 SpikingJelly triton", ("fp32",), _make_spikingjelly("triton"), cuda_only=True, tie_tolerant=True),
    Contender("c5-sj-cupy", "5 SpikingJelly cupy", ("fp32",), _make_spikingjelly("cupy"), cuda_only=True, tie_tolerant=True),
)
BY_KEY = {c.key: c for c in CONTENDERS}
REFERENCE_KEY = "c1-index"
COMPILE_KEY = "c3-compile"
OURS_KEY = "c4-triton"
