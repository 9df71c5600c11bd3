"""Helpers shared by the LIF tests, imported as a plain module (``from lif_helpers import ...``;
pytest puts tests/ on sys.path, as for ``conftest``).

* layouts: ``make_layout`` builds the memory layouts the tests feed a LIF ([B, T, ...] contiguous,
  time-major storage, strided, permuted, stride-0 over time, time_dim=0) and ``time_major_storage``
  re-stores a tensor time-major; ``poisoned_out`` is a NaN-filled (optionally transposed) ``out=`` buffer;
* poisoned outputs: ``poison_triton_outputs`` / ``poison_cpu_outputs`` make the Triton and the C
  launchers fill every output with NaN before the kernel runs, so an element a kernel fails to
  write shows up as a NaN spike or gradient; ``count_calls`` counts calls of launchers (which kernel ran);
* tile shrinking: ``shrink_triton_tiles``, the one place that names the Triton tile constants (the
  ``small_tiles`` fixture of tests/conftest.py calls it with the size of a ``small_tiles`` marker);
* ``assert_grad_close``: a gradient against the fp32 reference, fp32 within 1e-5 and 16-bit by the
  three-way rule (16-bit result vs fp32 reference vs 16-bit reference);
* ``saved_tensors`` / ``saved_bytes_per_element``: what autograd keeps for the backward, counted with
  ``torch.autograd.graph.saved_tensors_hooks``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

FP32_RTOL = 1e-5

# ---------------------------------------------------------------------------- layouts

LAYOUT_KINDS = ("contiguous", "transposed", "sliced", "strided", "permuted", "reversed", "stride0", "time_major")


def make_layout(kind: str, B: int, T: int, trail: tuple[int, ...]) -> tuple[tuple[int, ...], Callable, int]:
    """(shape of the leaf tensor, view ``x = build(leaf)``, time_dim of x) for a memory layout.

    Every kind but ``time_major`` builds x = [B, T, *trail] (time_dim 1):

    * ``contiguous``: the leaf itself;
    * ``transposed``: time-major storage, [T, B, ...] seen as [B, T, ...];
    * ``sliced``: every other neuron (stride 2 along the collapsible trailing dims);
    * ``strided``: every other neuron of time-major storage: no dimension contiguous;
    * ``permuted``: trailing dims stored in reverse, so that they do not collapse (a launcher copies);
    * ``reversed``: every dim stored in reverse ([*reversed(trail), T, B]);
    * ``stride0``: one input broadcast over time (stride 0 on dim 1).

    ``time_major`` is x = [T, B, *trail] itself, time_dim 0.
    """
    if kind == "contiguous":
        return (B, T, *trail), (lambda leaf: leaf), 1
    if kind == "transposed":
        return (T, B, *trail), (lambda leaf: leaf.transpose(0, 1)), 1
    if kind == "sliced":
        return (B, T, *trail[:-1], 2 * trail[-1]), (lambda leaf: leaf[..., ::2]), 1
    if kind == "strided":
        return (T, B, *trail[:-1], 2 * trail[-1]), (lambda leaf: leaf.transpose(0, 1)[..., ::2]), 1
    if kind == "permuted":
        return (B, T, *reversed(trail)), (lambda leaf: leaf.permute(0, 1, *range(leaf.dim() - 1, 1, -1))), 1
    if kind == "reversed":
        return (*reversed(trail), T, B), (lambda leaf: leaf.permute(*range(leaf.dim() - 1, -1, -1))), 1
    if kind == "stride0":
        return (B, *trail), (lambda leaf: leaf.unsqueeze(1).expand(B, T, *trail)), 1
    if kind == "time_major":
        return (T, B, *trail), (lambda leaf: leaf), 0
    raise ValueError(kind)


def time_major_storage(x: torch.Tensor) -> torch.Tensor:
    """``x`` ([B, T, ...]) with the same values, stored time-major."""
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def poisoned_out(shape, device, dtype=torch.float32, transpose: tuple[int, int] | None = None) -> torch.Tensor:
    """A NaN-filled ``out=`` buffer of ``shape``; ``transpose=(i, j)``: stored with dims i and j swapped."""
    if transpose is None:
        return torch.full(shape, math.nan, dtype=dtype, device=device)
    i, j = transpose
    stored = list(shape)
    stored[i], stored[j] = stored[j], stored[i]
    return torch.full(stored, math.nan, dtype=dtype, device=device).transpose(i, j)


# ---------------------------------------------------------------------------- poisoned outputs, small tiles


def poison_triton_outputs(monkeypatch) -> None:
    """The Triton launchers fill every output buffer they allocate with NaN before launch."""
    import snn.kernels.lif.triton_launch as L

    monkeypatch.setattr(L, "POISON_OUTPUTS", True)


def poison_cpu_outputs(monkeypatch) -> None:
    """The C kernels' launchers (the LIF's and the fused LIF + pooling's) fill every output they allocate
    with NaN before the kernel runs."""
    from snn.kernels.lif import cpu_launch, cpu_pool

    real_fresh = cpu_launch._fresh_output
    monkeypatch.setattr(cpu_launch, "_fresh_output", lambda *args, **kw: real_fresh(*args, **kw).fill_(float("nan")))
    real_contiguous = cpu_pool.fresh_contiguous
    monkeypatch.setattr(cpu_pool, "fresh_contiguous", lambda *args: real_contiguous(*args).fill_(float("nan")))


def count_calls(monkeypatch, targets: dict) -> dict:
    """``{label: (module, function name)}`` -> ``{label: calls}``, counting from now on (the functions still run)."""
    calls = dict.fromkeys(targets, 0)
    for label, (module, name) in targets.items():
        def wrapped(*args, _label=label, _fn=getattr(module, name), **kwargs):
            calls[_label] += 1
            return _fn(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapped)
    return calls


def shrink_triton_tiles(monkeypatch, neurons: int) -> None:
    """Triton tiles of ``neurons`` neurons (kernels/lif/triton_launch.py's ``TILE_NEURONS``, 1024 in
    production), so that small test shapes cross the tile edges; outputs are poisoned too. The one
    place the tile constant is named. Does nothing where Triton cannot be imported (the backend is
    then not under test).
    """
    try:
        import snn.kernels.lif.triton_launch as L
    except ImportError:
        return
    monkeypatch.setattr(L, "TILE_NEURONS", neurons)
    monkeypatch.setattr(L, "POISON_OUTPUTS", True)


# ---------------------------------------------------------------------------- gradients against the reference


def assert_grad_close(got: torch.Tensor, ref32: torch.Tensor, ref_lp: torch.Tensor | None, dtype: torch.dtype,
                      label: str) -> None:
    """A gradient against the fp32 reference's on the same (rounded) input.

    fp32: equal within 1e-5 relative, atol 1e-5 of the largest finite element. 16-bit, the three-way
    rule: the result computed in ``dtype`` (``got``) must be no further from the fp32 reference
    (``ref32``) than twice the error of the reference run in ``dtype`` itself (``ref_lp``), plus an
    atol of 2 ulps of the dtype at the gradient's scale: a kernel that accumulates in fp32 rounds
    its output once (half an ulp) and saves ``h`` in 16 bits (another ulp-sized error through
    ``c*h`` and ``sg(h)``); where the 16-bit reference happens to be exact, that is all the slack
    there is. NaN (and, in 16 bits, inf) positions must be the same.
    """
    assert got.shape == ref32.shape, f"{label}: shape {tuple(got.shape)}, expected {tuple(ref32.shape)}"
    assert torch.equal(got.isnan(), ref32.isnan()), f"{label}: NaN positions differ"
    finite = ref32.isfinite()
    scale = ref32[finite].abs().max().item() if finite.any() else 0.0
    if dtype == torch.float32:
        torch.testing.assert_close(got, ref32, rtol=FP32_RTOL, atol=FP32_RTOL * scale, equal_nan=True,
                                   msg=lambda m: f"{label}: {m}")
        return
    assert torch.equal(got.float().isinf(), ref32.isinf()), f"{label}: inf positions differ"
    err = (got.float() - ref32).abs()[finite]
    err_lp = (ref_lp.float() - ref32).abs().nan_to_num(math.inf, math.inf)[finite]
    atol = 2 * torch.finfo(dtype).eps * scale
    bad = err > 2 * err_lp + atol
    assert not bad.any(), (
        f"{label}: {bad.sum().item()} of {bad.numel()} elements worse than 2x the {dtype} reference's own error "
        f"(max error {err.max().item():.3g} vs {err_lp.max().item():.3g}, atol {atol:.3g})"
    )


# ---------------------------------------------------------------------------- what autograd saves


@contextmanager
def saved_tensors() -> Iterator[list[torch.Tensor]]:
    """Every tensor autograd saves for the backward inside the block, in the order it is saved."""
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        yield saved


def saved_bytes_per_element(fn, x: torch.Tensor, *args, **kwargs) -> tuple[float, int]:
    """(bytes saved for the backward per element of ``x``, number of tensors saved) by ``fn(x, ...)``."""
    with saved_tensors() as saved:
        fn(x, *args, **kwargs)
    return sum(t.numel() * t.element_size() for t in saved) / x.numel(), len(saved)
