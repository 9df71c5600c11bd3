"""The peers' canonical examples, eager against ``torch.compile`` (defaults), ours against the peer: training step time.

    python -m benchmarks.compile_examples --reps 10              # the table of benchmarks/RESULTS.md

Three ports, each a training step (forward, loss, backward, SGD step) on a random batch, the four
contenders (ours eager, ours compiled, peer eager, peer compiled) interleaved call by call, medians:

* ``sj_csnn``: SpikingJelly's ``conv_fashion_mnist`` CSNN (its own class) against our
  :class:`snn.csnn.SpikingCSNN` with its weights (T=4, IF neurons, atan surrogate).
* ``tutorial5``: snnTorch tutorial 5, 784-1000-10 ``Leaky`` (beta 0.95, subtract reset), T=25, the
  image presented at every step; the loss is the sum over steps of the cross-entropy of the output
  membrane (theirs) and of the output layer's input current (ours: the same FLOPs; a differentiable
  membrane output is issue 17's other part).
* ``tutorial6``: snnTorch tutorial 6, 12C5-MP2-64C5-MP2-FC10, T=50, beta 0.5, ``fast_sigmoid``
  (slope 25) for theirs; ours uses ``surrogate="atan"`` (``fast_sigmoid`` is not in this tree), and
  snnTorch's rate cross-entropy against ours on the mean output spikes.

Our ports use our LIF with ``reset="soft"`` for snnTorch's subtract reset (the same work; the exact
snnTorch neuron is issue 17's other part). Compilation and two warm-up steps happen before timing.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from snn import LIFSpike, TimeDistributed, direct_encode
from benchmarks.common import interleaved_times


# ---- snnTorch tutorials 5 and 6 -------------------------------------------------------------------

class Tutorial5Theirs(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        import snntorch as snn

        self.steps = steps
        self.fc1, self.lif1 = nn.Linear(784, 1000), snn.Leaky(beta=0.95)
        self.fc2, self.lif2 = nn.Linear(1000, 10), snn.Leaky(beta=0.95)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        mems = []
        for _ in range(self.steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            mems.append(mem2)
        return torch.stack(mems)  # [T, B, 10]


class Tutorial5Ours(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.fc1, self.lif1 = TimeDistributed(nn.Linear(784, 1000)), LIFSpike(tau=0.95, reset="soft")
        self.fc2 = TimeDistributed(nn.Linear(1000, 10))

    def forward(self, x):
        current = self.fc2(self.lif1(self.fc1(direct_encode(x, self.steps))))
        return current.transpose(0, 1)  # [T, B, 10]


def tutorial5_loss(out, target):
    return sum(F.cross_entropy(out[t], target) for t in range(out.shape[0]))


def tutorial6_theirs(steps: int):
    import snntorch as snn
    from snntorch import surrogate, utils

    grad = surrogate.fast_sigmoid(slope=25)
    net = nn.Sequential(
        nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True))

    class Tutorial6Theirs(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            utils.reset(self.net)
            return torch.stack([self.net(x)[0] for _ in range(steps)])  # spikes [T, B, 10]

    return Tutorial6Theirs()


def tutorial6_ours(steps: int):
    lif = (lambda: LIFSpike(tau=0.5, reset="soft", surrogate="atan"))

    class Tutorial6Ours(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                TimeDistributed(nn.Conv2d(1, 12, 5)), TimeDistributed(nn.MaxPool2d(2)), lif(),
                TimeDistributed(nn.Conv2d(12, 64, 5)), TimeDistributed(nn.MaxPool2d(2)), lif(),
                TimeDistributed(nn.Flatten()), TimeDistributed(nn.Linear(64 * 4 * 4, 10)), lif())

        def forward(self, x):
            return self.net(direct_encode(x, steps)).transpose(0, 1)  # spikes [T, B, 10]

    return Tutorial6Ours()


def tutorial6_loss_theirs(spikes, target):
    from snntorch import functional as SF

    return SF.ce_rate_loss()(spikes, target)


def rate_loss(spikes, target):
    return F.cross_entropy(spikes.mean(0), target)


# ---- SpikingJelly's CSNN --------------------------------------------------------------------------

def sj_pair(channels: int):
    from benchmarks.test_csnn import make_pair

    theirs, ours = make_pair(channels)
    return ours, theirs


def mse_rate_loss(out, target):
    return F.mse_loss(out, F.one_hot(target, 10).float())


# ---- the harness ----------------------------------------------------------------------------------

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


def examples(args):
    """name -> (ours model, peer model, our loss, peer loss, images, peer reset or None)."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    if "sj_csnn" in args.examples:
        from spikingjelly.activation_based import functional

        ours, theirs = sj_pair(args.channels)
        images = torch.rand(args.csnn_batch, 1, 28, 28, generator=gen)
        out["sj_csnn"] = (ours, theirs, mse_rate_loss, mse_rate_loss, images, functional.reset_net)
    if "tutorial5" in args.examples:
        torch.manual_seed(0)
        images = torch.rand(args.t5_batch, 784, generator=gen)
        out["tutorial5"] = (Tutorial5Ours(25), Tutorial5Theirs(25), tutorial5_loss, tutorial5_loss, images, None)
    if "tutorial6" in args.examples:
        torch.manual_seed(0)
        images = torch.rand(args.t6_batch, 1, 28, 28, generator=gen)
        out["tutorial6"] = (tutorial6_ours(50), tutorial6_theirs(50), rate_loss, tutorial6_loss_theirs, images, None)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--examples", default="sj_csnn,tutorial5,tutorial6")
    parser.add_argument("--channels", type=int, default=32, help="CSNN channels (SpikingJelly's default: 128)")
    parser.add_argument("--csnn-batch", type=int, default=32)
    parser.add_argument("--t5-batch", type=int, default=128)
    parser.add_argument("--t6-batch", type=int, default=16)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}", flush=True)
    for name, (ours, theirs, loss_ours, loss_theirs, images, reset) in examples(args).items():
        target = torch.arange(images.shape[0]) % 10
        torch._dynamo.reset()
        steps = {
            "ours eager": training_step(ours, loss_ours, images, target),
            "ours compiled": training_step(torch.compile(ours), loss_ours, images, target),
            "peer eager": training_step(theirs, loss_theirs, images, target, reset and (lambda: reset(theirs))),
            "peer compiled": training_step(torch.compile(theirs), loss_theirs, images, target,
                                           reset and (lambda: reset(theirs))),
        }
        start = time.perf_counter()
        for step in steps.values():  # compile and warm up
            step(), step()
        warm = time.perf_counter() - start
        med, _ = interleaved_times(steps, args.reps)
        cells = " | ".join(f"{k} {1e3 * med[k]:.1f} ms" for k in steps)
        print(f"{name} (batch {images.shape[0]}): {cells} || ours compiled / ours eager "
              f"{med['ours eager'] / med['ours compiled']:.2f}x faster, ours compiled vs peer compiled "
              f"{med['peer compiled'] / med['ours compiled']:.2f}x, ours eager vs peer eager "
              f"{med['peer eager'] / med['ours eager']:.2f}x, best ours vs peer eager "
              f"{med['peer eager'] / min(med['ours eager'], med['ours compiled']):.2f}x "
              f"(compile + warm-up {warm:.0f} s; load average {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
