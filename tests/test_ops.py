"""The registered operators (snn/lif/ops.py): torch.library.opcheck for every op-backed backend and layout.

opcheck runs the op eagerly and under fake tensors (shapes, dtypes *and strides* of the fake
implementation against the real one), checks the schema (no hidden mutation or aliasing), the
autograd registration, and traces forward + backward with AOTAutograd under dynamic shapes,
comparing with eager. The Triton backend runs in the interpreter on CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.library import opcheck

from lif_helpers import make_layout
from snn.lif.backends import BACKENDS, get_lif_function
from snn.lif.spec import LIFSpec
from snn.lif.ops import OPS, _options, surrogate_spike

for _name in BACKENDS:  # loading a backend registers its ops
    get_lif_function(_name)
OP_BACKENDS = sorted(OPS)
B, T, N = 2, 3, 5
# (layout, dtype, spec, tensor tau, tensor thresh): every layout the issue names, with the options rotated.
CASES = {
    "contiguous": (torch.float32, LIFSpec(), True, False),
    "stride0": (torch.float32, LIFSpec(reset="soft", surrogate="sigmoid"), False, True),
    "time_major": (torch.float32, LIFSpec(v_reset=-0.25, detach_reset=True, surrogate="atan"), True, True),
    "4d": (torch.float32, LIFSpec(surrogate="rectangle"), True, False),
    "fp16": (torch.float16, LIFSpec(surrogate="rectangle"), True, True),  # triton saves fp32 h here
    "bf16": (torch.bfloat16, LIFSpec(), False, False),
}


def make_x(layout: str, dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
    """An input of ``layout`` ([B, T, ...] as the op sees it) and whether its outputs are time-major."""
    gen = torch.Generator().manual_seed(0)
    rand = (lambda *shape: 2 * torch.rand(*shape, generator=gen))
    kind, trail = {"stride0": ("stride0", (N,)), "time_major": ("transposed", (N,)), "4d": ("contiguous", (2, 3, 2))}.get(
        layout, ("contiguous", (N,)))
    shape, build, _ = make_layout(kind, B, T, trail)  # "time_major": time-major storage seen as [B, T, N]
    return build(rand(*shape)).to(dtype), layout == "time_major"


@pytest.mark.parametrize("layout", list(CASES))
@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_opcheck_forward_and_backward(backend, layout):
    dtype, spec, tensor_tau, tensor_thresh = CASES[layout]
    x, time_major = make_x(layout, dtype)
    x.requires_grad_()
    neurons = x.shape[2:]
    tau = torch.full(neurons, 0.6, requires_grad=True) if tensor_tau else None
    thresh = torch.full(neurons, 0.9, requires_grad=True) if tensor_thresh else None
    v0 = torch.rand((B, *neurons), requires_grad=True)
    fwd, bwd, _ = OPS[backend]
    args = (x, tau, 0.6, thresh, 0.9, v0, *_options(spec), True, True, time_major)
    opcheck(fwd, args)  # raises with the failing check's name

    # The backward op on its own (without autograd), with a gradient for the final potential.
    spikes, h, v = fwd(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
    grad_spikes = torch.rand(x.shape, dtype=dtype)
    bwd_args = (grad_spikes, h, torch.rand(v.shape), None if tau is None else tau.detach(), 0.6,
                None if thresh is None else thresh.detach(), 0.9, v0.detach(), *_options(spec),
                tensor_tau, tensor_thresh, True, dtype, time_major)
    opcheck(bwd, bwd_args)


def test_opcheck_without_optional_outputs():
    """No grad, no final potential: the unrequested outputs are empty tensors, in the fake too."""
    for backend in OP_BACKENDS:
        x, _ = make_x("contiguous", torch.float32)
        spikes, h, v = OPS[backend][0](x, None, 0.5, None, 1.0, None, *_options(LIFSpec()), False, False, False)
        assert h.shape == v.shape == (0,), backend
        opcheck(OPS[backend][0], (x, None, 0.5, None, 1.0, None, *_options(LIFSpec()), False, False, False))


def test_opcheck_surrogate_spike():
    """The reference's spike function (the seed's ZIF) is an op too."""
    z = (torch.rand(3, 4, 5) - 0.5).requires_grad_()
    opcheck(torch.ops.snn.surrogate_spike.default, (z, "triangle", None))
    (surrogate_spike(z, LIFSpec(surrogate="atan")) * 2).sum().backward()
    assert z.grad.abs().sum() > 0


def test_every_op_backend_is_registered():
    """A backend that computes through the op factory appears in OPS with both directions."""
    assert {"eager", "triton"} <= set(OPS)
    for name, (fwd, bwd, _) in OPS.items():
        assert str(fwd).startswith(f"snn.lif_fwd_{name}") and str(bwd).startswith(f"snn.lif_bwd_{name}")


@pytest.mark.parametrize("layout", ["contiguous", "time_major", "fp16"])
@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_eager_fast_path_equals_the_op(backend, layout, monkeypatch):
    """Plain eager calls skip the dispatcher (snn.lif.ops._plain_eager); through the op they give the same bits."""
    import snn.lif.ops

    dtype, spec, tensor_tau, tensor_thresh = CASES[layout]
    x, time_major = make_x(layout, dtype)
    x = x.transpose(0, 1) if time_major else x
    lif = get_lif_function(backend)
    results = []
    for fast in (True, False):
        monkeypatch.setattr(snn.lif.ops, "EAGER_FAST_PATH", fast)
        leaf = x.detach().clone().requires_grad_()
        tau = torch.full(x.shape[2:], 0.6, requires_grad=True)
        v0 = torch.rand((B, *x.shape[2:]), generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = lif(leaf, tau, 0.9, spec=spec, time_dim=0 if time_major else 1, v0=v0, return_v=True, return_h=True)
        (out.spikes.float().sum() * 0.5 + out.v.float().square().sum()).backward()
        results.append((out.spikes, out.v, out.h, leaf.grad, tau.grad, v0.grad))
    for name, fast, op in zip(("spikes", "v", "h", "grad x", "grad tau", "grad v0"), *results):
        assert fast.stride() == op.stride() and torch.equal(fast, op), f"{backend} {layout}: {name}"
