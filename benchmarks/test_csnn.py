"""CSNN training step and inference, ours vs SpikingJelly's own CSNN (eager), side by side in one process.

    python -m pytest benchmarks/test_csnn.py --benchmark-only --benchmark-group-by=param
    python -m benchmarks.test_csnn              # the interleaved table of benchmarks/RESULTS.md

Skips SpikingJelly where it does not import (pip install --no-deps spikingjelly==2.0.0 loguru).
"""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch

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


def step_function(model, batch: int, spikingjelly: bool):
    """One training step (forward, MSE against one-hot, backward, SGD step), as the recipe does."""
    from spikingjelly.activation_based import functional

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.rand(batch, 1, 28, 28)
    target = torch.nn.functional.one_hot(torch.arange(batch) % 10, 10).float()

    def step():
        out = model(images)
        loss = torch.nn.functional.mse_loss(out, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if spikingjelly:
            functional.reset_net(model)

    return step


def inference_function(model, batch: int, spikingjelly: bool):
    from spikingjelly.activation_based import functional

    model.eval()
    images = torch.rand(batch, 1, 28, 28)

    @torch.no_grad()
    def infer():
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


def interleaved(functions: dict, rounds: int) -> dict:
    """Median seconds per call of each function, called in turn (A B A B ...) so load hits both alike."""
    for function in functions.values():
        function()  # warm-up
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def main(rounds: int = 3) -> None:
    import os

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    print("| C | batch | SpikingJelly eager step (s) | ours eager (s) | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for channels, batch in SHAPES:
        theirs, ours = make_pair(channels)
        result = interleaved({"sj": step_function(theirs, batch, True), "ours": step_function(ours, batch, False)}, rounds)
        print(f"| {channels} | {batch} | {result['sj']:.3f} | {result['ours']:.3f} | {result['sj'] / result['ours']:.2f}x |",
              flush=True)
    print("\n| inference C=128, batch | SpikingJelly eager (ms) | ours (ms) | speed-up |")
    print("| --- | --- | --- | --- |")
    for batch in (1, 256):
        theirs, ours = make_pair(128)
        result = interleaved({"sj": inference_function(theirs, batch, True), "ours": inference_function(ours, batch, False)},
                             rounds * (5 if batch == 1 else 1))
        print(f"| {batch} | {result['sj'] * 1e3:.1f} | {result['ours'] * 1e3:.1f} | {result['sj'] / result['ours']:.2f}x |",
              flush=True)
    print(f"load after: {os.getloadavg()}")


def cuda_main(rounds: int = 10) -> None:
    """The CSNN step on CUDA at batch 128 and 512, fp32 and bf16 autocast: ours (Triton kernel) vs
    SpikingJelly (its Triton backend where it has one, else its torch backend). For gpu_check.sh."""
    from spikingjelly.activation_based import functional

    device = torch.device("cuda")
    print("| C | batch | dtype | SpikingJelly step (ms) | ours (ms) | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in (128, 512):
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(0)
            theirs = spikingjelly_csnn(128).to(device)
            try:
                functional.set_backend(theirs, "triton")
            except Exception as exc:  # noqa: BLE001  (older versions: cupy or torch only)
                print(f"(SpikingJelly triton backend unavailable: {exc}; its torch backend is measured)")
            ours = SpikingCSNN(CSNNConfig(channels=128), backend="triton").to(device)
            images = torch.rand(batch, 1, 28, 28, device=device)
            target = torch.nn.functional.one_hot(torch.arange(batch, device=device) % 10, 10).float()
            timings = {}
            for name, model in (("sj", theirs), ("ours", ours)):
                optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

                def step(model=model, optimizer=optimizer, name=name):
                    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                        out = model(images)
                    torch.nn.functional.mse_loss(out.float(), target).backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if name == "sj":
                        functional.reset_net(model)

                for _ in range(3):
                    step()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(rounds):
                    step()
                torch.cuda.synchronize()
                timings[name] = (time.perf_counter() - start) / rounds
            print(f"| 128 | {batch} | {str(dtype)[6:]} | {timings['sj'] * 1e3:.2f} | {timings['ours'] * 1e3:.2f} | "
                  f"{timings['sj'] / timings['ours']:.2f}x |", flush=True)


if __name__ == "__main__":
    if "--cuda" in sys.argv:
        cuda_main()
    else:
        main()
