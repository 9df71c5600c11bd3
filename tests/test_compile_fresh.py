"""torch.compile with default settings, as a user meets it: a fresh process, an empty kernel cache (issue 17).

The conv-BN-LIF-pool-conv-BN-LIF stack that crashed Inductor (``cannot determine truth value of
Relational``) on the third input shape, compiled with ``torch.compile(model)`` and nothing else:
a static graph for the first shape, dynamic ones after. The compiled step must run the fused C
kernel forward and backward (the launchers are counted; the eager op is never entered), and equal
the eager model: the same spikes without BatchNorm and gradients to rounding (Inductor computes
some of the other layers' backward in another order; bit for bit under ``aot_eager``,
tests/test_compile.py), and to rounding with it (Inductor computes BatchNorm's batch statistics
in another order, which can move a potential across the threshold).

Image sizes. Inductor in torch 2.14 fails on a conv stack once the image size has changed between
calls (``InductorError: TypeError: cannot determine truth value of Relational: 1 < s35``; issue 17's
``128*s0*s92 < 128``). That is not our op: ``GraphLowering.run_node`` sorts the symbolic strides of a
forward-graph output that is a view (a layer's folded input ``x.reshape(B*T, C, H, W)``, saved for
the conv's weight gradient) without its shape environment, and a plain PyTorch conv over such a
reshape fails the same way. A fixed image size (batch and T may change) or ``dynamic=False`` avoid
it; ``torch._dynamo.mark_static`` on the image dims avoided it for a dense ``[B, T, C, H, W]`` input
but not for a directly encoded one (not understood yet).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = r"""
import json, torch
from torch import nn
import snn.kernels.lif.cpu_launch as L, snn.lif.eager as E
from snn import LIFSpike, TimeDistributed, direct_encode

calls = {"fused forward": 0, "fused backward": 0, "eager op": 0}
def counting(name, fn):
    def wrapped(*args, **kwargs):
        calls[name] += 1
        return fn(*args, **kwargs)
    return wrapped
L.lif_cpu_forward = counting("fused forward", L.lif_cpu_forward)
L.lif_cpu_backward = counting("fused backward", L.lif_cpu_backward)
E.lif_torch_forward = counting("eager op", E.lif_torch_forward)

def stack(bn):
    torch.manual_seed(0)
    norm = (lambda c: TimeDistributed(nn.BatchNorm2d(c))) if bn else (lambda c: nn.Identity())
    return nn.Sequential(
        TimeDistributed(nn.Conv2d(1, 8, 3, padding=1)), norm(8), LIFSpike(tau=1.0, surrogate="atan"),
        TimeDistributed(nn.MaxPool2d(2)),
        TimeDistributed(nn.Conv2d(8, 8, 3, padding=1)), norm(8), LIFSpike(tau=1.0, surrogate="atan"))

report = {}
for bn in BN:
    model = stack(bn)
    compiled = torch.compile(model)
    for batch, steps, side in SHAPES:
        images = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(batch)) * 2
        x = direct_encode(images, steps)
        before = dict(calls)
        out = compiled(x)
        grads = torch.autograd.grad(out.sum(), list(model.parameters()))
        used = {k: calls[k] - before[k] for k in calls}
        ref = model(x)
        ref_grads = torch.autograd.grad(ref.sum(), list(model.parameters()))
        report[f"bn={bn} {batch}x{steps}x{side}"] = {
            "calls": used,
            "spikes differing": (out != ref).float().mean().item(),
            "grads equal": all(torch.equal(g, r) for g, r in zip(grads, ref_grads)),
            # relative to the largest gradient: a conv bias before BatchNorm has a gradient of rounding noise
            "grads close": max((g - r).abs().max().item() for g, r in zip(grads, ref_grads))
                           <= 1e-4 * max(r.abs().max().item() for r in ref_grads),
        }
print(json.dumps(report))
"""


def _run(tmp_path, bn, shapes) -> dict:
    env = {**os.environ, "SNN_CACHE_DIR": str(tmp_path / "cache"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    code = f"BN = {bn!r}\nSHAPES = {shapes!r}\n" + SCRIPT
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check(report: dict) -> None:
    for case, r in report.items():
        assert r["calls"] == {"fused forward": 2, "fused backward": 2, "eager op": 0}, f"{case}: {r['calls']}"
        if case.startswith("bn=False"):
            assert r["spikes differing"] == 0 and r["grads close"], f"{case}: {r}"
        else:
            assert r["spikes differing"] < 1e-3 and r["grads close"], f"{case}: {r}"


def test_default_compile_of_a_conv_bn_lif_stack_in_a_fresh_process(tmp_path):
    """A static graph for the first batch, a dynamic one for the next (batch and T changed)."""
    _check(_run(tmp_path, (True,), ((4, 2, 8), (5, 3, 8))))


@pytest.mark.slow
def test_default_compile_equals_eager_with_and_without_batchnorm(tmp_path):
    """Both stacks, three batch/T shapes (the image size fixed: see the module docstring)."""
    _check(_run(tmp_path, (True, False), ((4, 2, 8), (5, 3, 8), (3, 2, 8))))
