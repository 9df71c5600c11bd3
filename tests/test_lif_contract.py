"""The contract every LIF backend keeps, for every option of the neuron (snn/lif/spec.py).

One test, parametrised over backend x option combination x dtype x layout x parameter kind, against
autograd of the reference loop (snn/lif/reference.py):

* spikes identical: to the reference in the input dtype for backends that compute in that dtype,
  to the fp32 reference on the same (rounded) input for backends that accumulate in fp32;
* fp32 gradients (input, and tau / thresh / v0 where they require grad) equal within 1e-5
  relative (atol 1e-5 of the largest element: tau and thresh gradients are sums over batch and time,
  reduced in another order than autograd's);
* 16-bit gradients no further from the fp32 reference than twice the 16-bit reference's own error
  (plus 2 ulps of the gradient's scale), the flash-attention rule.

Plus chunked-vs-whole-sequence identity (v0 / return_v) and the h output. A new backend is a
registry entry (snn/lif/backends.py); a new option is a row in SPECS. Kernel-only tests (rounding,
offsets, compiled code) stay beside the kernel (tests/test_kernel_*.py).
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from lif_helpers import assert_grad_close, make_layout
from snn.lif.backends import BACKENDS, REGISTRY, features_used, get_lif_function
from snn.lif.reference import lif_reference
from snn.lif.spec import LIFOutput, LIFSpec

UNDER_TEST = [name for name in BACKENDS if name != "reference"]
SPECS = [
    LIFSpec(reset, v_reset, detach, surrogate)
    for (reset, v_reset), detach, surrogate in itertools.product(
        [("hard", 0.0), ("hard", -0.25), ("soft", 0.0)], [False, True], ["triangle", "sigmoid", "atan", "rectangle"]
    )
] + [
    # snnTorch's Leaky: its subtract reset (previous step's spike, detached) and its fast_sigmoid surrogate
    LIFSpec("subtract_next", 0.0, True, surrogate) for surrogate in ("triangle", "atan", "fast_sigmoid")
] + [LIFSpec("hard", 0.0, False, "fast_sigmoid"), LIFSpec("soft", 0.0, True, "fast_sigmoid")]
SPEC_IDS = [f"{s.reset}{'' if s.v_reset == 0 else s.v_reset}-{'detach' if s.detach_reset else 'attach'}-{s.surrogate}" for s in SPECS]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ["contiguous", "time_major", "stride0", "strided"]
KINDS = ["numbers", "learnable", "stateful"]
B, T, TRAIL = 3, 5, (4, 37)  # N = 148 crosses the kernel's test-sized tiles (the marker below)

# the Triton kernel's tiles shrunk to 64 neurons so that the shapes here cross their edges,
# and its outputs poisoned (the small_tiles fixture, tests/conftest.py)
pytestmark = [pytest.mark.small_tiles(64), pytest.mark.usefixtures("small_tiles")]


def require(backend: str, features) -> None:
    """Skip, naming them, the options the registry says ``backend`` does not implement."""
    missing = sorted(set(features) - REGISTRY[backend].features)
    if missing:
        pytest.skip(f"{backend} does not implement {', '.join(missing)} (snn/lif/backends.py)")


def accumulates_in_fp32(backend: str) -> bool:
    return REGISTRY[backend].accumulates_in_fp32


def make_case(layout: str, kind: str, seed: int):
    """Leaf tensors (fp64, to be cast) and a builder ``x = build(leaf)`` with the time layout it implies."""
    gen = torch.Generator().manual_seed(seed)
    thresh = 0.6 + 0.8 * torch.rand((), generator=gen, dtype=torch.float64).item()
    tau = 0.3 + 0.65 * torch.rand((), generator=gen, dtype=torch.float64).item()

    def near(shape):  # potentials hover around the threshold: every surrogate window is visited
        return thresh * (0.15 + torch.rand(shape, generator=gen, dtype=torch.float64))

    leaf_shape, build, time_dim = make_layout(layout, B, T, TRAIL)  # strided: no dim contiguous
    leaf = near(leaf_shape)
    params = {}
    if kind == "learnable":  # per-neuron tau [N-dims] and per-channel thresh [C, 1]
        params["tau"] = tau * (0.8 + 0.4 * torch.rand(TRAIL, generator=gen, dtype=torch.float64))
        params["thresh"] = thresh * (0.8 + 0.4 * torch.rand((TRAIL[0], 1), generator=gen, dtype=torch.float64))
    else:
        params["tau"], params["thresh"] = tau, thresh
    if kind == "stateful":
        params["v0"] = thresh * torch.rand((B, *TRAIL), generator=gen, dtype=torch.float64)
    out_shape = (T, B, *TRAIL) if time_dim == 0 else (B, T, *TRAIL)
    grad_s = torch.randn(out_shape, generator=gen, dtype=torch.float64)
    grad_v = torch.randn((B, *TRAIL), generator=gen, dtype=torch.float64)
    return leaf, build, time_dim, params, grad_s, grad_v


def run(fn, case, spec, dtype):
    """Spikes and the gradients of every leaf that requires one, in ``dtype``."""
    leaf, build, time_dim, params, grad_s, grad_v = case
    leaves = {"x": leaf.to(dtype).requires_grad_()}
    kwargs = {}
    for name in ("tau", "thresh", "v0"):
        value = params.get(name)
        if isinstance(value, torch.Tensor):
            # tensor parameters stay fp32 under 16-bit inputs, as an nn.Parameter of a bf16 model would not;
            # the dtype of the leaf is what the caller owns, so give them the input dtype too
            leaves[name] = value.to(dtype).requires_grad_()
            kwargs[name] = leaves[name]
        elif value is not None:
            kwargs[name] = value
    stateful = "v0" in kwargs
    out = fn(build(leaves["x"]), kwargs["tau"], kwargs["thresh"], spec=spec, time_dim=time_dim,
             v0=kwargs.get("v0"), return_v=stateful)
    spikes = out.spikes if stateful else out
    loss = (spikes * grad_s.to(dtype)).sum()
    if stateful:
        loss = loss + (out.v * grad_v.to(out.v.dtype)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return spikes.detach(), dict(zip(leaves, grads))


def assert_close_to_reference(name, got, ref32, ref_lp, dtype, label):
    assert got.dtype == ref_lp.dtype and got.shape == ref32.shape, f"{label}: {name} {got.dtype} {tuple(got.shape)}"
    assert_grad_close(got, ref32, ref_lp, dtype, f"{label}: d/d{name}")


def contract_cases():
    """Every backend x spec x dtype x layout x kind. Backends that run in Triton's interpreter on
    this machine (thousands of times slower than compiled code) run one rotating (layout, kind) per
    (spec, dtype) by default, so that every option, dtype, layout and kind is still covered, and the
    rest of the product under ``-m slow``."""
    for backend in UNDER_TEST:
        interpreted = backend == "triton" and not torch.cuda.is_available()
        for (i, spec), (dtype_id, dtype) in itertools.product(enumerate(SPECS), DTYPES.items()):
            for j, (layout, kind) in enumerate(itertools.product(LAYOUTS, KINDS)):
                rotating = j == (i * len(DTYPES) + list(DTYPES).index(dtype_id)) % (len(LAYOUTS) * len(KINDS))
                marks = [pytest.mark.slow] if interpreted and not rotating else []
                yield pytest.param(backend, spec, dtype, layout, kind, marks=marks,
                                   id=f"{backend}-{SPEC_IDS[i]}-{dtype_id}-{layout}-{kind}")


@pytest.mark.parametrize("backend, spec, dtype, layout, kind", list(contract_cases()))
def test_backend_keeps_the_contract(backend, spec, dtype, layout, kind):
    label = f"{backend} {spec} {dtype} {layout} {kind}"
    case = make_case(layout, kind, zlib.crc32(label.encode()))
    require(backend, features_used(spec, tensor_params=kind == "learnable", v0=kind == "stateful",
                                   return_v=kind == "stateful", time_dim=case[2]))
    fn = get_lif_function(backend)
    spikes, grads = run(fn, case, spec, dtype)
    ref_dtype = torch.float32 if accumulates_in_fp32(backend) else dtype
    # the fp32 reference sees exactly the rounded values the backend saw
    rounded = (case[0].to(dtype).double(), *case[1:3],
               {k: (v.to(dtype).double() if isinstance(v, torch.Tensor) else v) for k, v in case[3].items()}, *case[4:])
    ref_spikes, _ = run(lif_reference, rounded, spec, ref_dtype)
    ref32_spikes, ref32 = run(lif_reference, rounded, spec, torch.float32)
    assert spikes.dtype == dtype and spikes.shape == ref_spikes.shape
    assert torch.equal(spikes.to(ref_dtype), ref_spikes), (
        f"{label}: spikes differ from the reference at {(spikes.to(ref_dtype) != ref_spikes).sum().item()} positions"
    )
    assert ref32_spikes.float().mean() > 0.02, f"{label}: the case must actually spike"
    _, ref_lp = run(lif_reference, rounded, spec, dtype) if dtype != torch.float32 else (None, ref32)
    for name, grad in grads.items():
        assert_close_to_reference(name, grad, ref32[name], ref_lp[name], dtype, label)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("spec", SPECS[::5], ids=SPEC_IDS[::5])
@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_equal_one_call_over_the_whole_sequence(backend, spec, dtype):
    """Feeding each chunk's final potential as the next chunk's v0 is the same as one call."""
    require(backend, features_used(spec, tensor_params=True, v0=True, return_v=True))
    gen = torch.Generator().manual_seed(5)
    x = (0.2 + 1.1 * torch.rand(B, 9, *TRAIL, generator=gen)).to(dtype).requires_grad_()
    tau = torch.full(TRAIL, 0.7, requires_grad=True)
    fn = get_lif_function(backend)
    whole = fn(x, tau, 1.0, spec=spec, return_v=True)
    v, pieces = None, []
    for chunk in x.split([4, 1, 4], dim=1):
        out = fn(chunk, tau, 1.0, spec=spec, v0=v, return_v=True)
        pieces.append(out.spikes)
        v = out.v
    assert torch.equal(torch.cat(pieces, dim=1), whole.spikes), "chunked spikes differ"
    assert torch.equal(v, whole.v), "chunked final potential differs"
    g = torch.randn(whole.spikes.shape, generator=gen).to(dtype)
    grads_whole = torch.autograd.grad((whole.spikes * g).sum() + whole.v.sum(), [x, tau])
    grads_chunks = torch.autograd.grad((torch.cat(pieces, dim=1) * g).sum() + v.sum(), [x, tau])
    for a, b, name in zip(grads_chunks, grads_whole, ("x", "tau")):
        # the same terms, summed by autograd in another order: fp32 to 1e-5, 16-bit to a few ulps of the scale
        scale = b.abs().max().item()
        tol = dict(rtol=1e-5, atol=1e-5 * scale) if dtype == torch.float32 else dict(rtol=0, atol=8 * torch.finfo(dtype).eps * scale)
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"d/d{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_h_output_is_the_pre_reset_potential(backend):
    require(backend, {"return_h", "time_dim=0", "reset='soft'"})
    gen = torch.Generator().manual_seed(3)
    x = 0.2 + 1.2 * torch.rand(T, B, 37, generator=gen)
    out = get_lif_function(backend)(x, 0.6, 1.0, reset="soft", time_dim=0, return_h=True)
    assert isinstance(out, LIFOutput) and out.v is None and out.h.shape == x.shape
    h, v = [], torch.zeros(B, 37)
    for x_t in x:
        h_t = v * 0.6 + x_t
        h.append(h_t)
        v = h_t - 1.0 * (h_t > 1.0).float()
    assert torch.equal(out.h, torch.stack(h)) and torch.equal(out.spikes, (torch.stack(h) > 1.0).float())
    assert get_lif_function(backend)(x, time_dim=0).shape == x.shape  # plain call: just the spikes


def test_registry_refuses_what_a_backend_lacks_in_one_sentence(monkeypatch):
    from dataclasses import replace

    from snn.lif.backends import Backend, check_supported
    from snn.errors import UserError
    from snn.lif.layers import LIFSpike, lif_spike

    monkeypatch.setitem(REGISTRY, "torch", replace(REGISTRY["torch"], features=frozenset({"v0"})))
    with pytest.raises(UserError, match=r"^backend 'torch' does not implement reset='soft', surrogate='atan'; use (\w+ or )*reference\.$"):
        LIFSpike(reset="soft", surrogate="atan", backend="torch")
    with pytest.raises(UserError, match="does not implement return_v"):
        lif_spike(torch.rand(2, 3, 4), return_v=True, backend="torch")
    assert isinstance(REGISTRY["triton"], Backend)
    with pytest.raises(UserError, match=r"^backend 'triton' supports float16, bfloat16, float32; got float64\.$"):
        check_supported("triton", dtype=torch.float64)
    with pytest.raises(UserError, match="backend 'triton' runs on cuda, cpu; got meta"):
        lif_spike(torch.rand(2, 3, 4, device="meta"), backend="triton")
