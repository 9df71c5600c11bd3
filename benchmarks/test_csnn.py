"""CSNN training step and inference, ours vs SpikingJelly's own CSNN (eager), side by side in one process.

    python -m pytest benchmarks/test_csnn.py --benchmark-only --benchmark-group-by=param
    python -m benchmarks.test_csnn              # the interleaved tables of benchmarks/RESULTS.md
    python -m benchmarks.test_csnn --shapes 128x128 --dtypes fp32 --contenders sj-compiled,ours
    python -m benchmarks.test_csnn --cuda [--dry-run]   # gpu_check.sh's stage (--dry-run: on the CPU, tiny)

Contenders: SpikingJelly's CSNN eager (sj) and under torch.compile (sj-compiled), ours eager and
compiled, and on request ``ours-unfused`` (each conv block's LIF and max-pooling as two layers, as
before snn.lif.pool fused them); fp32 and bf16 autocast; every row's contenders are called in turn (A B C D A B ...,
``torch.utils.benchmark.Timer`` via ``benchmarks.common.interleaved``); on CUDA ``triton.testing.do_bench``.

Skips SpikingJelly where it does not import (pip install --no-deps spikingjelly==2.0.0 loguru).
"""

from __future__ import annotations

import os
import sys
import time
import types

import pytest
import torch

from benchmarks.common import interleaved
from snn.csnn import CSNNConfig, SpikingCSNN, state_dict_from_spikingjelly

SHAPES = [(32, 64), (32, 128), (128, 64), (128, 128)]  # (channels, batch)


def spikingjelly_csnn(channels: int, time_steps: int = 4):
    """SpikingJelly's own CSNN (its tutorial's class); tensorboard is stubbed where missing (only its script uses it)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = None
        sys.modules["torch.utils.tensorboard"] = stub
    from spikingjelly.activation_based.examples.conv_fashion_mnist import CSNN

    return CSNN(T=time_steps, channels=channels)


def make_pair(channels: int):
    torch.manual_seed(0)
    theirs = spikingjelly_csnn(channels)
    ours = SpikingCSNN(CSNNConfig(channels=channels))
    ours.load_state_dict(state_dict_from_spikingjelly(theirs.state_dict()))
    return theirs, ours


def _autocast(dtype, device_type: str = "cpu"):
    """bf16 autocast when ``dtype`` is torch.bfloat16, else a no-op context."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype is not None)


def step_function(model, batch: int, spikingjelly: bool, dtype=None, device: str = "cpu"):
    """One training step (forward, MSE against one-hot, backward, SGD step), as the recipe does;
    ``dtype=torch.bfloat16``: the forward under bf16 autocast (the loss in fp32)."""
    from spikingjelly.activation_based import functional

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.rand(batch, 1, 28, 28, device=device)
    target = torch.nn.functional.one_hot(torch.arange(batch, device=device) % 10, 10).float()

    def step():
        with _autocast(dtype, torch.device(device).type):
            out = model(images)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if spikingjelly:
            functional.reset_net(model)

    return step


def inference_function(model, batch: int, spikingjelly: bool, dtype=None):
    from spikingjelly.activation_based import functional

    model.eval()
    images = torch.rand(batch, 1, 28, 28)

    @torch.no_grad()
    def infer():
        with _autocast(dtype):
            model(images)
        if spikingjelly:
            functional.reset_net(model)

    return infer


@pytest.mark.parametrize("channels,batch", SHAPES)
@pytest.mark.parametrize("who", ["ours", "spikingjelly"])
def test_csnn_training_step(benchmark, channels, batch, who):
    pytest.importorskip("spikingjelly")
    theirs, ours = make_pair(channels)
    benchmark.pedantic(step_function(theirs if who == "spikingjelly" else ours, batch, who == "spikingjelly"),
                       rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("batch", [1, 256])
@pytest.mark.parametrize("who", ["ours", "spikingjelly"])
def test_csnn_inference(benchmark, batch, who):
    pytest.importorskip("spikingjelly")
    theirs, ours = make_pair(128)
    benchmark.pedantic(inference_function(theirs if who == "spikingjelly" else ours, batch, who == "spikingjelly"),
                       rounds=5, warmup_rounds=1)


CONTENDERS = ("sj", "sj-compiled", "ours", "ours-compiled")
# not in the default table: ours with each conv block's LIF and pooling as two layers (what the fused
# pass of snn.lif.pool replaced; forward_with_spikes runs them so), for before/after rows
EXTRA_CONTENDERS = ("ours-unfused",)


class UnfusedCSNN(SpikingCSNN):
    """SpikingCSNN whose conv blocks run the LIF and ``F.max_pool2d`` one after the other (same function)."""

    def forward(self, images):
        return self.forward_with_spikes(images)[0]


DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def contenders(channels: int, names=CONTENDERS) -> dict:
    """``name -> (model, is SpikingJelly)``; the compiled ones wrap the same modules in torch.compile
    (default mode), as a user would. Dynamo's cache is cleared first, so each row compiles afresh."""
    torch._dynamo.reset()
    theirs, ours = make_pair(channels)
    chosen = {}
    for name in names:
        base = theirs if name.startswith("sj") else ours
        if name == "ours-unfused":
            base = UnfusedCSNN(ours.config)
            base.load_state_dict(ours.state_dict())
        chosen[name] = (torch.compile(base) if name.endswith("compiled") else base, name.startswith("sj"))
    return chosen


def interleaved_row(functions: dict, rounds: int) -> tuple[dict, dict]:
    """(median seconds per call, interleaved; seconds of the first call, compilation included) per function."""
    first = {}
    for name, function in functions.items():
        start = time.perf_counter()
        function()
        first[name] = time.perf_counter() - start
    return {name: m.median for name, m in interleaved(functions, rounds).items()}, first


PAIRS = (("sj", "ours"), ("sj-compiled", "ours"), ("sj-compiled", "ours-compiled"), ("ours", "ours-compiled"),
         ("ours-unfused", "ours"))


def table(kind: str, rows, dtypes, names, rounds: int) -> None:
    """Interleaved medians per (C, batch) and dtype of the training step (s) or of inference (ms), speed-ups ``a / b``."""
    make, scale, unit = (step_function, 1, "s") if kind == "training" else (inference_function, 1e3, "ms")
    print(f"| {kind}: C | batch | dtype | " + " | ".join(f"{n} ({unit})" for n in names) + " | "
          + " | ".join(f"speed-up {b} vs {a}" for a, b in PAIRS) + " | first calls (s) |\n" + "| --- " * (4 + len(names) + len(PAIRS)) + "|")
    for channels, batch in rows:
        for dtype_name in dtypes:
            functions = {n: make(model, batch, sj, DTYPES[dtype_name]) for n, (model, sj) in contenders(channels, names).items()}
            median, first = interleaved_row(functions, rounds * (5 if batch == 1 else 1))
            ratios = [f"{median[a] / median[b]:.2f}x" if a in median and b in median else "-" for a, b in PAIRS]
            print(f"| {channels} | {batch} | {dtype_name} | " + " | ".join(f"{scale * median[n]:.3g}" for n in names) + " | "
                  + " | ".join(ratios) + " | " + ", ".join(f"{n} {first[n]:.1f}" for n in names) + " |", flush=True)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="CSNN step and inference, ours vs SpikingJelly, interleaved")
    parser.add_argument("--shapes", default=",".join(f"{c}x{b}" for c, b in SHAPES), help="CxBATCH,... (training step)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"a subset of {','.join(CONTENDERS + EXTRA_CONTENDERS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inference-batches", default="1,256", help="batches of the inference table ('' = none)")
    parser.add_argument("--no-training", action="store_true", help="the inference table only")
    args = parser.parse_args(argv)
    names = tuple(args.contenders.split(","))
    dtypes = tuple(args.dtypes.split(","))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    if not args.no_training:
        table("training", [tuple(int(v) for v in text.split("x")) for text in args.shapes.split(",")], dtypes, names, args.rounds)
    if args.inference_batches:
        table("inference", [(128, int(b)) for b in args.inference_batches.split(",")], dtypes, names, args.rounds)
    print(f"load after: {os.getloadavg()}")


def cuda_main(rounds: int = 5, dry_run: bool = False) -> None:
    """The CSNN step (C=128) on CUDA at batch 128 and 512, fp32 and bf16 autocast: ours (Triton
    kernel) vs SpikingJelly's default CUDA path (it picks its CUDA kernel, else Triton, else torch;
    ``SJ_IF_CUDA_IMPLEMENTATION=triton`` or ``=cuda`` forces one). For gpu_check.sh.
    ``dry_run``: the same code on the CPU at batch 2, one round, ours on the torch backend (a check
    that the stage runs, not a measurement)."""
    device = "cpu" if dry_run else "cuda"
    batches, rounds = ((2,), 1) if dry_run else ((128, 512), rounds)
    implementation = os.environ.get("SJ_IF_CUDA_IMPLEMENTATION", "auto")
    if not dry_run:
        from triton.testing import do_bench
    print(f"SpikingJelly IF implementation: {implementation} (SJ_IF_CUDA_IMPLEMENTATION)" + ("; DRY RUN on the CPU" if dry_run else ""))
    print("| C | batch | dtype | SpikingJelly step (ms) | ours (ms) | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in batches:
        for dtype_name, dtype in DTYPES.items():
            torch.manual_seed(0)
            theirs = spikingjelly_csnn(128).to(device)
            ours = SpikingCSNN(CSNNConfig(channels=128), backend="torch" if dry_run else "triton").to(device)
            timings = {}
            for name, model in (("sj", theirs), ("ours", ours)):
                step = step_function(model, batch, name == "sj", dtype, device)
                # do_bench: warm-up, L2 flush and synchronisation around every call; median ms
                timings[name] = interleaved({name: step}, 1)[name].median if dry_run else do_bench(step, rep=rounds * 100) / 1e3
            print(f"| 128 | {batch} | {dtype_name} | {timings['sj'] * 1e3:.2f} | {timings['ours'] * 1e3:.2f} | "
                  f"{timings['sj'] / timings['ours']:.2f}x |", flush=True)


if __name__ == "__main__":
    if "--cuda" in sys.argv:
        cuda_main(dry_run="--dry-run" in sys.argv)
    else:
        main(sys.argv[1:])
