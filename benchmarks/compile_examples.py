"""The peers' canonical examples, eager against ``torch.compile`` (defaults), ours against the peer: training step time.

    python -m benchmarks.compile_examples --reps 10              # the table of benchmarks/RESULTS.md

Each a training step (forward, loss, backward, SGD) on a random batch; the four contenders (ours eager,
ours compiled, peer eager, peer compiled) interleaved call by call (``benchmarks.common.interleaved``), medians:

* ``sj_csnn``: SpikingJelly's ``conv_fashion_mnist`` CSNN against our :class:`snn.csnn.SpikingCSNN` with its weights.
* ``tutorial5``: snnTorch tutorial 5, 784-1000-10 ``Leaky`` (beta 0.95, subtract reset), T=25; the loss sums the
  per-step cross-entropy of the output layer's membrane (ours: its ``h``, with its gradient).
* ``tutorial6``: snnTorch tutorial 6, 12C5-MP2-64C5-MP2-FC10, T=50, beta 0.5, ``fast_sigmoid`` (slope 25);
  snnTorch's rate cross-entropy on the output spikes, for both.

Our ports are the same networks with snnTorch's neurons as :func:`snn.peers.leaky` builds them (exact:
``reset="subtract_next"``, its surrogates) and the peer's weights; before timing, each port's output
and loss are checked equal to the peer's (``check_equal``). Compilation and two warm-up steps happen
before timing.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import interleaved
from snn import TimeDistributed, direct_encode
from snn.peers import leaky


class Tutorial5Theirs(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        import snntorch as snn

        self.steps, self.fc1, self.lif1 = steps, nn.Linear(784, 1000), snn.Leaky(beta=0.95)
        self.fc2, self.lif2 = nn.Linear(1000, 10), snn.Leaky(beta=0.95)

    def forward(self, x):
        mem1, mem2, mems = self.lif1.init_leaky(), self.lif2.init_leaky(), []
        for _ in range(self.steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            _, mem2 = self.lif2(self.fc2(spk1), mem2)
            mems.append(mem2)
        return torch.stack(mems)  # [T, B, 10]


class Tutorial5Ours(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.fc1, self.lif1 = steps, TimeDistributed(nn.Linear(784, 1000)), leaky(0.95)
        self.fc2, self.lif2 = TimeDistributed(nn.Linear(1000, 10)), leaky(0.95)

    def forward(self, x):
        current = self.fc2(self.lif1(self.fc1(direct_encode(x, self.steps))))
        return self.lif2(current, return_h=True).h.transpose(0, 1)  # snnTorch's mem2 of every step, [T, B, 10]


class Tutorial6Theirs(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        lif = lambda **kw: snn.Leaky(beta=0.5, spike_grad=surrogate.fast_sigmoid(slope=25), init_hidden=True, **kw)  # noqa: E731
        self.steps, self.net = steps, nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), lif(), nn.Conv2d(12, 64, 5),
                                                    nn.MaxPool2d(2), lif(), nn.Flatten(), nn.Linear(1024, 10), lif(output=True))

    def forward(self, x):
        from snntorch import utils

        utils.reset(self.net)
        return torch.stack([self.net(x)[0] for _ in range(self.steps)])  # spikes [T, B, 10]


class Tutorial6Ours(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        from snntorch import surrogate

        lif = lambda: leaky(0.5, spike_grad=surrogate.fast_sigmoid(slope=25))  # noqa: E731
        self.steps, self.net = steps, nn.Sequential(
            TimeDistributed(nn.Conv2d(1, 12, 5)), TimeDistributed(nn.MaxPool2d(2)), lif(), TimeDistributed(nn.Conv2d(12, 64, 5)),
            TimeDistributed(nn.MaxPool2d(2)), lif(), TimeDistributed(nn.Flatten()), TimeDistributed(nn.Linear(1024, 10)), lif())

    def forward(self, x):
        return self.net(direct_encode(x, self.steps)).transpose(0, 1)  # spikes [T, B, 10]


def share_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy the peer's Linear/Conv weights into our port (the same layers in the same order)."""
    kinds = (nn.Linear, nn.Conv2d)
    pairs = zip([m for m in ours.modules() if isinstance(m, kinds)], [m for m in theirs.modules() if isinstance(m, kinds)])
    with torch.no_grad():
        for a, b in pairs:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)


def check_equal(name, ours, theirs, loss_ours, loss_theirs, images, target) -> str:
    """Our port's output and loss against the peer's, same weights and input (before any timing).
    Spikes must be equal; a membrane output may differ by the rounding of the folded matmuls."""
    a, b = ours(images), theirs(images)
    la, lb = loss_ours(a, target).item(), loss_theirs(b, target).item()
    spikes = bool(((b == 0) | (b == 1)).all())
    if (spikes and not torch.equal(a, b)) or not torch.allclose(a, b, rtol=1e-5, atol=1e-5) or abs(la - lb) > 1e-5 * abs(lb):
        raise SystemExit(f"{name}: our port differs from the peer (max |diff| {(a - b).abs().max().item():.3g}, loss {la} vs {lb})")
    what = "spikes equal" if spikes else f"membranes within {(a - b).abs().max().item():.2g}"
    return f"{name}: ours = peer ({what}; loss {la:.6g} vs {lb:.6g})"


def per_step_ce(out, target):
    return sum(F.cross_entropy(out[t], target) for t in range(out.shape[0]))


def snntorch_rate_ce(spikes, target):
    from snntorch import functional as SF

    return SF.ce_rate_loss()(spikes, target)


def examples(args) -> dict:
    """name -> (ours, peer, our loss, peer loss, images, peer reset or None)."""
    gen, out = torch.Generator().manual_seed(0), {}
    mse_rate = lambda out, target: F.mse_loss(out, F.one_hot(target, 10).float())  # noqa: E731
    if "sj_csnn" in args.examples:
        from spikingjelly.activation_based import functional

        from benchmarks.test_csnn import make_pair

        theirs, ours = make_pair(args.channels)
        out["sj_csnn"] = (ours, theirs, mse_rate, mse_rate, torch.rand(args.csnn_batch, 1, 28, 28, generator=gen), functional.reset_net)
    torch.manual_seed(0)
    if "tutorial5" in args.examples:
        ours, theirs = Tutorial5Ours(25), Tutorial5Theirs(25)
        share_weights(ours, theirs)
        out["tutorial5"] = (ours, theirs, per_step_ce, per_step_ce, torch.rand(args.t5_batch, 784, generator=gen), None)
    if "tutorial6" in args.examples:
        ours, theirs = Tutorial6Ours(50), Tutorial6Theirs(50)
        share_weights(ours, theirs)
        out["tutorial6"] = (ours, theirs, snntorch_rate_ce, snntorch_rate_ce, torch.rand(args.t6_batch, 1, 28, 28, generator=gen), None)
    return out


def training_step(model, loss_fn, images, target, reset=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        loss = loss_fn(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if reset is not None:
            reset()

    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--examples", default="sj_csnn,tutorial5,tutorial6")
    parser.add_argument("--channels", type=int, default=32, help="CSNN channels (SpikingJelly's default: 128)")
    parser.add_argument("--csnn-batch", type=int, default=32)
    parser.add_argument("--t5-batch", type=int, default=128)
    parser.add_argument("--t6-batch", type=int, default=16)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}", flush=True)
    for name, (ours, theirs, loss_ours, loss_theirs, images, reset) in examples(args).items():
        target, peer_reset = torch.arange(images.shape[0]) % 10, reset and (lambda: reset(theirs))
        if name != "sj_csnn":  # the CSNN's equality with SpikingJelly is tests/test_csnn.py's
            print(check_equal(name, ours, theirs, loss_ours, loss_theirs, images, target), flush=True)
        torch._dynamo.reset()
        steps = {"ours eager": training_step(ours, loss_ours, images, target),
                 "ours compiled": training_step(torch.compile(ours), loss_ours, images, target),
                 "peer eager": training_step(theirs, loss_theirs, images, target, peer_reset),
                 "peer compiled": training_step(torch.compile(theirs), loss_theirs, images, target, peer_reset)}
        start = time.perf_counter()
        for step in steps.values():  # compile and warm up
            step(), step()
        warm = time.perf_counter() - start
        med = {k: m.median for k, m in interleaved(steps, args.reps).items()}
        print(f"{name} (batch {images.shape[0]}): " + " | ".join(f"{k} {1e3 * v:.1f} ms" for k, v in med.items())
              + f" || ours compiled / ours eager {med['ours eager'] / med['ours compiled']:.2f}x faster, ours compiled vs peer "
              f"compiled {med['peer compiled'] / med['ours compiled']:.2f}x, ours eager vs peer eager {med['peer eager'] / med['ours eager']:.2f}x, "
              f"best ours vs peer eager {med['peer eager'] / min(med['ours eager'], med['ours compiled']):.2f}x "
              f"(compile + warm-up {warm:.0f} s; load average {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
