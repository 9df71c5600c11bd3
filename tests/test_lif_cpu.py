"""The fused CPU kernel (kernels/lif/cpu_launch.py, kernels/lif/lif_cpu.c) beyond the contract test.

The contract (tests/test_lif_contract.py) proves the ``torch`` backend, which runs this kernel on
CPU tensors, against the reference for every option, dtype and layout. Here: bit-identity with the
eager implementation it replaces, thread-count independence of the parameter gradients, what the
forward saves, and the fallback (one warning) where no C compiler is found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from lif_helpers import make_layout, poison_cpu_outputs, saved_tensors
from snn.kernels.lif import cpu_launch as lif_cpu
from snn.lif.eager import lif_eager
from snn.lif.spec import LIFSpec

pytestmark = pytest.mark.skipif(not lif_cpu.available(), reason=f"fused CPU kernel not built: {lif_cpu.BUILD_INFO.get('error')}")


def _run(fn, x, g, dtype, time_dim=1, tau=0.5, thresh=1.0, spec=LIFSpec()):
    x = x.to(dtype).requires_grad_()
    s = fn(x, tau, thresh, spec=spec, time_dim=time_dim)
    leaves = [x] + [t for t in (tau, thresh) if isinstance(t, torch.Tensor)]
    return s.detach(), torch.autograd.grad((s * g.to(dtype)).sum(), leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("layout", ["contiguous", "time_major", "stride0", "odd"])
def test_equals_the_eager_backend_bit_for_bit(dtype, layout):
    """Seed neuron: spikes and grad_x identical to snn.lif.eager (itself bit-identical to the reference in fp32)."""
    gen = torch.Generator().manual_seed(1)
    kind, B, T, trail = {"contiguous": ("contiguous", 5, 7, (600,)), "time_major": ("time_major", 5, 7, (600,)),
                         "stride0": ("stride0", 5, 7, (600,)), "odd": ("contiguous", 3, 1, (5, 13))}[layout]
    shape, build, time_dim = make_layout(kind, B, T, trail)
    x = build(0.6 + 0.6 * torch.randn(shape, generator=gen))
    g = torch.randn(x.shape, generator=gen)
    s_fused, (g_fused,) = _run(lif_cpu.lif_torch, x, g, dtype, time_dim)
    s_eager, (g_eager,) = _run(lif_eager, x, g, dtype, time_dim)
    assert torch.equal(s_fused, s_eager), f"{layout} {dtype}: spikes differ at {(s_fused != s_eager).sum().item()} positions"
    assert torch.equal(g_fused, g_eager), f"{layout} {dtype}: grad_x differs (max {(g_fused - g_eager).abs().max().item()})"


def test_parameter_gradients_do_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(2)
    x = 0.6 + 0.6 * torch.randn(64, 6, 1000, generator=gen)
    g = torch.randn(x.shape, generator=gen)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            tau = torch.full((1000,), 0.5, requires_grad=True)
            thresh = torch.full((1000,), 1.0, requires_grad=True)
            grads.append(_run(lif_cpu.lif_torch, x, g, torch.float32, tau=tau, thresh=thresh, spec=LIFSpec(reset="soft"))[1])
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert torch.equal(a, b), "gradients changed with the thread count"


def test_forward_saves_only_the_input():
    """The backward recomputes h from x: no tensor of the forward's own is kept (0 new bytes per neuron-step)."""
    x = torch.randn(4, 6, 100).requires_grad_()
    with saved_tensors() as saved:
        lif_cpu.lif_torch(x)
    assert len(saved) == 1 and saved[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_falls_back_to_eager_with_one_warning_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("SNN_CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SNN_CACHE_DIR", str(tmp_path / "cache"))
    lif_cpu._reset_for_tests()
    try:
        x = (0.6 + 0.6 * torch.randn(3, 4, 10)).requires_grad_()
        with pytest.warns(RuntimeWarning, match="fused CPU LIF kernel is unavailable"):
            s = lif_cpu.lif_torch(x)
        assert not lif_cpu.available() and "no-such-cc" in lif_cpu.BUILD_INFO["error"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one warning, not one per call
            s2 = lif_cpu.lif_torch(x)
        assert torch.equal(s, lif_eager(x)) and torch.equal(s2, s)
    finally:
        monkeypatch.undo()
        lif_cpu._reset_for_tests()
    assert lif_cpu.available()


def _large_input(seed: int) -> torch.Tensor:
    """[1, 6, n] fp32 whose outputs are just over the cache's size limit (n is a multiple of nothing)."""
    n = (lif_cpu.LARGE_OUTPUT_BYTES // 4) // 6 + 4099
    return 0.6 + 0.6 * torch.randn(1, 6, n, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def output_cache(monkeypatch):
    cache = lif_cpu.OutputCache(1 << 30)
    monkeypatch.setattr(lif_cpu, "OUTPUT_CACHE", cache)
    return cache


def test_large_outputs_reuse_storage_only_when_nothing_holds_it(output_cache):
    """The storage of a large output is handed out again only once its tensor, views and graph
    are gone; results stay exact, and small outputs are never cached."""
    x = _large_input(3)
    s1 = lif_cpu.lif_torch(x)
    first = s1.untyped_storage().data_ptr()
    view = s1[0, 2:]
    del s1
    s2 = lif_cpu.lif_torch(x)
    assert s2.untyped_storage().data_ptr() != first, "a storage still used by a view was handed out again"
    del view
    s3 = lif_cpu.lif_torch(x)
    assert s3.untyped_storage().data_ptr() == first, "a storage nobody uses was not reused"
    assert torch.equal(s2, s3) and torch.equal(s3, lif_eager(x))
    assert output_cache.held_bytes() == 2 * s3.untyped_storage().nbytes()

    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    s_fused, (g_fused,) = _run(lif_cpu.lif_torch, x, g, torch.float32)
    s_eager, (g_eager,) = _run(lif_eager, x, g, torch.float32)
    assert torch.equal(s_fused, s_eager) and torch.equal(g_fused, g_eager)

    held = output_cache.held_bytes()
    small = 0.6 + 0.6 * torch.randn(4, 3, 100, generator=torch.Generator().manual_seed(2))
    _run(lif_cpu.lif_torch, small, torch.ones_like(small), torch.float32)
    assert output_cache.held_bytes() == held, "a small output was cached"


def test_output_cache_limit_and_release(output_cache):
    x = _large_input(5)
    nbytes = x.numel() * 4
    output_cache.limit_bytes = 0
    lif_cpu.lif_torch(x)
    assert output_cache.held_bytes() == 0, "SNN_OUTPUT_CACHE_MB=0 must switch the cache off"
    output_cache.limit_bytes = nbytes + nbytes // 2  # room for one output
    a = lif_cpu.lif_torch(x)
    b = lif_cpu.lif_torch(x)  # a still alive: b cannot be cached as well
    assert output_cache.held_bytes() == nbytes and a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
    lif_cpu.empty_output_cache()
    assert output_cache.held_bytes() == nbytes, "a storage in use was dropped"
    del a
    lif_cpu.empty_output_cache()
    assert output_cache.held_bytes() == 0


def test_output_cache_size_comes_from_the_environment():
    code = "import snn.kernels.lif.cpu_launch as c; print(c.OUTPUT_CACHE.limit_bytes)"
    env = {**os.environ, "SNN_OUTPUT_CACHE_MB": "64"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(64 << 20)


@pytest.mark.parametrize("case", ["seed", "soft-sigmoid", "v_reset-atan-detach", "learnable-rectangle", "v0-return_v"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_tile_edges_with_poisoned_outputs(monkeypatch, case, dtype):
    """N = 2 tiles + 37 (the C kernel's tile, from the library itself): every tile edge and the vector
    tail are crossed, and every output starts as NaN so an element the kernel fails to write shows."""
    tile = lif_cpu.BUILD_INFO["tile"]
    poison_cpu_outputs(monkeypatch)
    gen = torch.Generator().manual_seed(4)
    B, T, N = 3, 4, 2 * tile + 37
    x = (0.9 * (0.15 + torch.rand(B, T, N, generator=gen))).to(dtype).requires_grad_()
    g = torch.randn(B, T, N, generator=gen).to(dtype)
    options = {
        "seed": dict(spec=LIFSpec()),
        "soft-sigmoid": dict(spec=LIFSpec(reset="soft", surrogate="sigmoid", alpha=4.0)),
        "v_reset-atan-detach": dict(spec=LIFSpec(v_reset=-0.2, surrogate="atan", detach_reset=True)),
        "learnable-rectangle": dict(spec=LIFSpec(surrogate="rectangle"),
                                    tau=(0.5 + 0.3 * torch.rand(N, generator=gen)).requires_grad_(),
                                    thresh=(0.8 + 0.4 * torch.rand(N, generator=gen)).requires_grad_()),
        "v0-return_v": dict(spec=LIFSpec(), v0=torch.rand(B, N, generator=gen).to(dtype).requires_grad_(), return_v=True),
    }[case]
    results = []
    for fn in (lif_cpu.lif_torch, lif_eager):
        out = fn(x, **options)
        spikes, v = (out.spikes, out.v) if case == "v0-return_v" else (out, None)
        loss = (spikes * g).sum() + (0 if v is None else v.float().sum())
        leaves = [x] + [options[k] for k in ("tau", "thresh", "v0") if k in options]
        results.append((spikes.detach(), None if v is None else v.detach(), torch.autograd.grad(loss, leaves)))
    (s_f, v_f, g_f), (s_e, v_e, g_e) = results
    assert not s_f.isnan().any() and torch.equal(s_f, s_e), "spikes differ from the eager backend"
    if v_f is not None:
        assert torch.equal(v_f, v_e), "final potential differs"
    assert not g_f[0].isnan().any(), "grad_x has unwritten (NaN-poisoned) elements"
    tol = 1e-6 if case != "soft-sigmoid" else 1e-5  # expf's last bit; tau/thresh sums in another order
    for a, b in zip(g_f, g_e):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol if dtype == torch.float32 else 2e-2,
                                   atol=tol if dtype == torch.float32 else 2e-2)


def test_a_storage_the_caller_holds_is_never_handed_out_again(output_cache):
    """Issue 15: ``st = out.untyped_storage(); del out`` keeps the memory reachable; the next call must
    not write into it (PyTorch returns the cache's own storage object, so only its Python references show it)."""
    x = _large_input(7)
    out = lif_cpu.lif_torch(x)
    expected, shape, stride = out.clone(), out.shape, out.stride()
    storage = out.untyped_storage()
    del out
    other = lif_cpu.lif_torch(2.0 * x)
    assert other.untyped_storage().data_ptr() != storage.data_ptr(), "a storage the caller holds was handed out again"
    assert torch.equal(torch.empty(0).set_(storage, 0, shape, stride), expected), "a held storage was overwritten"
    held = [storage]
    del storage, other
    again = lif_cpu.lif_torch(3.0 * x)
    assert again.untyped_storage().data_ptr() != held[0].data_ptr(), "a storage held in a list was handed out again"
    del again
    held.clear()
    first = lif_cpu.lif_torch(x).untyped_storage().data_ptr()
    assert lif_cpu.lif_torch(x).untyped_storage().data_ptr() == first, "a storage nobody holds was not reused"


def _fresh(code: str, env: dict, cwd=None):
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          cwd=cwd, timeout=600)


FIRST_CALL = "import torch; from snn import lif_spike; print(int(lif_spike(torch.full((2, 3, 5), 1.2)).sum()))"


@pytest.mark.parametrize("damage", ["truncated", "zero-bytes", "garbage"])
def test_a_damaged_cached_library_is_rebuilt_with_one_warning(tmp_path, damage):
    """Issue 15: a truncated cached .so crashed every process with SIGBUS (dlopen maps it, the first
    access past its end kills the process). It is verified against its record and rebuilt."""
    env = {"SNN_CACHE_DIR": str(tmp_path)}
    assert _fresh(FIRST_CALL, env).returncode == 0
    (library,) = tmp_path.glob("lif_cpu-*.so")
    size = library.stat().st_size
    if damage == "truncated":
        os.truncate(library, size * 2 // 3)
    elif damage == "zero-bytes":
        os.truncate(library, 0)
    else:
        library.write_bytes(os.urandom(size))
    result = _fresh(FIRST_CALL, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "30"
    assert result.stderr.count("incomplete or damaged; rebuilding it") == 1, result.stderr
    assert library.stat().st_size == size
    again = _fresh(FIRST_CALL, env)
    assert again.returncode == 0 and "Warning" not in again.stderr, again.stderr


def test_an_unwritable_cache_folder_is_named_in_the_fallback_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _fresh(FIRST_CALL, {"SNN_CACHE_DIR": str(blocker / "cache")})
    assert result.returncode == 0 and result.stdout.strip() == "30"
    assert "is not writable" in result.stderr and "SNN_CACHE_DIR" in result.stderr, result.stderr
    assert "install a C compiler" not in result.stderr.lower()
    # the warning points at the user's line, not at a line of ours
    assert "<string>:1: RuntimeWarning" in result.stderr and "snn/" not in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["", "abc", "1.5", "-1"])
def test_a_bad_output_cache_size_is_one_sentence_naming_the_variable(value):
    result = _fresh(FIRST_CALL, {"SNN_OUTPUT_CACHE_MB": value})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("snn.errors.UserError: SNN_OUTPUT_CACHE_MB must be a whole number") and repr(value) in last


COMPILE_FIRST = """
import torch
from torch import nn
from snn import LIFSpike, TimeDistributed, direct_encode
from snn.model import MLPConfig, SpikingMLP
mlp = SpikingMLP(MLPConfig(in_features=12, hidden=8, num_classes=3, time_steps=3), backend="torch")
x = torch.rand(16, 12) * 3
torch.testing.assert_close(torch.compile(mlp, fullgraph=True)(x), mlp(x))
conv = nn.Sequential(TimeDistributed(nn.Conv2d(1, 4, 3, padding=1)), TimeDistributed(nn.BatchNorm2d(4)),
                     LIFSpike(tau=1.0, surrogate="atan"), TimeDistributed(nn.MaxPool2d(2)))
images = direct_encode(torch.rand(3, 1, 8, 8), 2)
torch.testing.assert_close(torch.compile(conv, fullgraph=True)(images), conv(images))
print("ok")
"""


def test_compile_as_the_first_thing_in_a_fresh_process(tmp_path):
    """Issue 15: Dynamo met the lock that guards the library's first load (Unsupported context manager)."""
    result = _fresh(COMPILE_FIRST, {"SNN_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
