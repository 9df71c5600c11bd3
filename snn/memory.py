"""Low-memory training: spikes saved as bits, blocks recomputed in the backward (``memory="low"``).

A *block* is a piece of a network that ends in a LIF layer (or, last in a network, in the
output layer): a weight layer, optional BatchNorm, the LIF, optional pooling. In the plain path
autograd keeps every intermediate of a block for the backward (the weight layer's float input,
BatchNorm's input, the LIF's input, the pooling input and its int64 indices). A recomputed block
keeps **only its input**, and keeps it as bits when it is spikes (1 bit per neuron-step,
:mod:`snn.spikebits`; 32x below fp32): the spikes of the previous LIF come bit-packed out of the
LIF kernel's own pass (:func:`lif_with_bits`), pooled spikes are packed by :func:`snn.spikebits.pack_bits`.
A dense input (the images of the first block; the MLP's first layer sees them once, the stride-0
broadcast over T is built inside the block) is kept as it is: the caller holds it anyway. The
backward unpacks the bits, runs the block's forward again under autograd and backpropagates
through it: the weight layer's input, BatchNorm's statistics, the LIF's input and the pooling
indices exist only inside the block's backward, one block at a time.

Exactness. The recomputation runs the same modules on the same values, so it computes the same
bits; the forward of a block is the plain forward op for op (the LIF's bits come from the same
kernel call that makes the spikes). Spikes and every gradient equal the plain path's to the bit
(``tests/test_memory.py``, both models, every backend, fp32 and bf16, the neuron options).
BatchNorm's running statistics are updated once per step, in the forward: during recomputation
each BatchNorm of the block normalises with the batch statistics (recomputed from the same input:
the same bits) without touching its running buffers or ``num_batches_tracked``.

What it costs: one more forward of each block per step (the weight layers' forward again, the
LIF forward again); benchmarks/RESULTS.md ("Memory") has the measured bytes and times.

Use: ``SpikingMLP(config, memory="low")`` / ``SpikingCSNN(config, memory="low")`` (``train.py
--memory low``), or, for your own networks, :func:`recompute_block` (a block of yours), :func:`spike_linear`
(a Linear on spikes that keeps their bits) and :func:`lif_with_bits`.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from snn.lif.spec import neuron_shape_param
from snn.spikebits import pack_bits, packed_shape, unpack_bits
from snn.time_distributed import direct_encode, fold_time, unfold_time

MEMORY_MODES = ("plain", "low")


def check_memory(memory: str) -> str:
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(map(repr, MEMORY_MODES))}, got {memory!r}")
    return memory


# ----------------------------------------------------------------------------------------------
# the LIF's spikes and their bits in one pass
# ----------------------------------------------------------------------------------------------


def lif_with_bits(lif, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spikes, bits)`` of the LIF module ``lif`` (:class:`snn.lif.layers.LIFSpike`, ``time_dim=1``) on
    ``x [B, T, ...]``, without autograd: the spikes are those ``lif(x)`` returns, the bits are written
    by the same kernel pass (C, Triton, eager); the reference backend packs its spikes afterwards."""
    if lif.time_dim != 1:
        raise ValueError("memory='low' needs LIF layers with time_dim=1 ([B, T, ...])")
    bits = torch.empty(packed_shape(x.shape), dtype=torch.uint8, device=x.device)
    with torch.no_grad():
        tau, thresh = neuron_shape_param(lif.tau, "tau", x), neuron_shape_param(lif.thresh, "thresh", x)
        if lif.backend in ("torch", "eager") and x.shape[1] > 0:
            from snn.kernels.lif import cpu_launch as lif_cpu
            from snn.lif.ops import _plain_eager

            if lif.backend == "torch" and _plain_eager(x) and lif_cpu.supports(x, tau, thresh):
                return lif_cpu.lif_cpu_forward(x, tau, thresh, lif.spec, None, False, False, bits=bits)[0], bits
            from snn.lif.eager import _param, lif_torch_forward

            return lif_torch_forward(x, _param(tau, x), _param(thresh, x), lif.spec, bits=bits)[0], bits
        if lif.backend == "triton" and x.numel() > 0:
            from snn.kernels.lif.triton_launch import lif_forward

            return lif_forward(x, tau, thresh, spec=lif.spec, save_h=False, bits_out=bits)[0], bits
        spikes = lif(x)
    return spikes, pack_bits(spikes)


def _plain_lif(lif, x):
    return lif(x)


@contextlib.contextmanager
def batch_statistics_only(modules: Iterable[nn.Module]):
    """BatchNorm layers among ``modules`` normalise with the batch's statistics without updating
    their running buffers (what a recomputation must do: the step's forward updated them once)."""
    frozen = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
              and m.track_running_stats]
    for m in frozen:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in frozen:
            m.track_running_stats = True


# ----------------------------------------------------------------------------------------------
# the recomputed block
# ----------------------------------------------------------------------------------------------


# Samples per piece of a block's per-sample part (see recompute_block's ``fn=(shared, local)``).
LOCAL_CHUNK = 16


def _pieces(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return t.split(LOCAL_CHUNK) if t.shape[0] > LOCAL_CHUNK else (t,)


def _forward(fn, x, lif_call):
    if not isinstance(fn, tuple):
        return fn(x, lif_call)
    shared, local = fn
    y = shared(x)
    outs = [local(piece, lif_call) for piece in _pieces(y)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class _Recompute(torch.autograd.Function):
    """Saves the block's input (bits for spikes) and nothing else; the backward recomputes the block."""

    @staticmethod
    def forward(ctx, run, shape_dtype, x, bits, *params):
        fn, modules, holder = run
        out = _forward(fn, x, holder.forward_lif)
        ctx.run, ctx.shape_dtype = run, shape_dtype
        ctx.params = params  # the modules' own parameters (not activations: nothing is copied)
        ctx.save_for_backward(x if bits is None else bits)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        fn, modules, _ = ctx.run
        (saved,) = ctx.saved_tensors
        x = saved if ctx.shape_dtype is None else unpack_bits(saved, *ctx.shape_dtype)
        needs = ctx.needs_input_grad
        x = x.detach().requires_grad_(needs[2])
        params = ctx.params
        with torch.enable_grad(), batch_statistics_only(modules):
            if isinstance(fn, tuple):  # the per-sample part piece by piece: its state is never whole
                shared, local = fn
                out = shared(x)
                grad_out = _local_backward(local, out, grad_out)
            else:
                out = fn(x, _plain_lif)
        wanted = [t for t, need in zip((x, *params), (needs[2], *needs[4:])) if need]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True)) if wanted else iter(())
        result = [next(grads) if need else None for need in (needs[2], *needs[4:])]
        return (None, None, result[0], None, *result[1:])


def _local_backward(local, y: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """The gradient at ``y`` of ``local``'s pieces, each recomputed and backpropagated on its own."""
    grad_y = torch.empty_like(y)
    pieces = _pieces(y.detach())
    start = 0
    for piece, grad_piece in zip(pieces, grad_out.split([p.shape[0] for p in pieces])):
        piece = piece.requires_grad_()
        (g,) = torch.autograd.grad(local(piece, _plain_lif), piece, grad_piece)
        grad_y[start:start + piece.shape[0]] = g
        start += piece.shape[0]
    return grad_y


class _LIFCalls:
    """The LIF call a block's function makes in the forward: spikes with bits, the last ones kept."""

    def __init__(self):
        self.spikes = self.bits = None

    def forward_lif(self, lif, x):
        self.spikes, self.bits = lif_with_bits(lif, x)
        return self.spikes


def recompute_block(fn: Callable, x: torch.Tensor, modules: Iterable[nn.Module], *, spikes: bool,
                    bits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the block ``fn(x, lif_call)`` keeping only its input for the backward.

    ``fn`` computes the block from ``x`` with the modules in ``modules`` (their parameters get the
    gradients), calling its LIF layer as ``lif_call(lif_module, current)``. ``fn`` may also be a pair
    ``(shared, local)``, the block being ``local(shared(x), lif_call)``, where ``local`` works on each
    sample (dim 0) on its own and has no parameter that needs a gradient (a LIF with number tau and
    thresh, pooling): it then runs :data:`LOCAL_CHUNK` samples at a time in the forward and in the
    backward, so that its ``[B, T, ...]`` intermediates and their gradients never exist for the whole
    batch at once (``shared``, e.g. the weight layer and BatchNorm, which couples the samples, runs whole). ``spikes``: ``x`` is 0/1
    spikes, kept as bits (``bits``, when the previous LIF already wrote them, else packed here);
    otherwise ``x`` itself is kept. Returns ``(out, out_bits)``: ``out_bits`` are the bits of ``out``
    when ``out`` is the block's LIF output (pass them to the next block), else None. Without grad (or
    when nothing needs it) this is just ``fn``, with the LIF writing bits as it does here.
    """
    modules = tuple(modules)
    holder = _LIFCalls()
    params = [p for m in modules for p in m.parameters()]
    if not torch.is_grad_enabled() or not (x.requires_grad or any(p.requires_grad for p in params)):
        out = _forward(fn, x, holder.forward_lif)
    else:
        if spikes and bits is None:
            bits = pack_bits(x.detach())
        shape_dtype = (tuple(x.shape), x.dtype) if spikes else None
        out = _Recompute.apply((fn, modules, holder), shape_dtype, x, bits if spikes else None, *params)
    out_bits = holder.bits if out_is_lif_output(out, holder) else None
    holder.spikes = holder.bits = None  # the graph (ctx.run) must not keep the block's float spikes alive
    return out, out_bits


def out_is_lif_output(out, holder) -> bool:
    return holder.spikes is not None and out.shape == holder.spikes.shape and (
        out.data_ptr() == holder.spikes.data_ptr())


class _SpikeLinear(torch.autograd.Function):
    """``F.linear`` of 0/1 spikes that keeps the spikes' bits instead of the float input. The backward
    unpacks them and forms the gradients with the products autograd's linear backward forms (so the
    bits are the same): ``grad @ W`` and ``grad^T @ s`` on the ``[B*T, features]`` views, bias ``sum(0)``."""

    @staticmethod
    def forward(ctx, x, bits, weight, bias):
        ctx.save_for_backward(bits)
        ctx.shape_dtype, ctx.weight = (tuple(x.shape), x.dtype), weight
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (bits,) = ctx.saved_tensors
        needs = ctx.needs_input_grad
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = g2.mm(ctx.weight).view(ctx.shape_dtype[0]) if needs[0] else None
        grad_w = grad_b = None
        if needs[2]:
            s2 = unpack_bits(bits, *ctx.shape_dtype).view(-1, ctx.shape_dtype[0][-1])
            grad_w = g2.t().mm(s2)
        if ctx.has_bias and needs[3]:
            grad_b = g2.sum(0)
        return grad_x, None, grad_w, grad_b


def spike_linear(layer: nn.Linear, spikes: torch.Tensor, bits: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(spikes)`` for 0/1 ``spikes [B, T, in_features]`` (contiguous) that keeps their bits, not
    the floats, for the weight's gradient (``bits``: from :func:`lif_with_bits`, else packed here)."""
    if not torch.is_grad_enabled() or not (spikes.requires_grad or layer.weight.requires_grad):
        return layer(spikes)
    if spikes.dim() != 3 or not spikes.is_contiguous():
        raise ValueError("spike_linear: expected contiguous spikes of shape [B, T, in_features]")
    if bits is None:
        bits = pack_bits(spikes.detach())
    return _SpikeLinear.apply(spikes, bits, layer.weight, layer.bias)


# ----------------------------------------------------------------------------------------------
# the two models, block by block (the same ops as their plain forward_with_spikes)
# ----------------------------------------------------------------------------------------------


def mlp_forward_low(model, images: torch.Tensor) -> torch.Tensor:
    """:class:`snn.model.SpikingMLP`'s logits, keeping fc1's output (once per sample) and two bit
    tensors (1 bit per hidden neuron-step each) for the backward."""

    steps = model.config.time_steps
    current = model.fc1(images.flatten(1))  # [B, hidden], kept (once per sample): fc1 is not recomputed
    s1, b1 = recompute_block(lambda c, lif: lif(model.lif1, direct_encode(c, steps)), current, (model.lif1,),
                             spikes=False)
    s2, b2 = recompute_block(lambda s, lif: lif(model.lif2, model.fc2(s)), s1, (model.fc2, model.lif2),
                             spikes=True, bits=b1)
    logits, _ = recompute_block(lambda s, lif: model.fc3(s.mean(dim=1)), s2, (model.fc3,), spikes=True, bits=b2)
    return logits


def csnn_forward_low(model, images: torch.Tensor) -> torch.Tensor:
    """:class:`snn.csnn.SpikingCSNN`'s output firing rates, keeping the images and the bits of each
    later block's input (pooled spikes, then the LIF's) for the backward."""

    batch, steps = images.shape[0], model.config.time_steps

    def spike_and_pool(lif_module, encode=False):  # the per-sample part of a conv block: LIF, 2x2 max pooling
        def local(current, lif):
            spikes = lif(lif_module, direct_encode(current, steps) if encode else current)
            return unfold_time(F.max_pool2d(fold_time(spikes), 2), current.shape[0])
        return local

    def conv1_bn1(x):  # once per sample; the per-sample part broadcasts it over T (stride 0)
        return model.bn1(model.conv1(x))

    def conv2_bn2(x):
        return unfold_time(model.bn2(model.conv2(fold_time(x))), batch)

    per_sample = not any(p.requires_grad for p in (*model.lif1.parameters(), *model.lif2.parameters()))
    blocks = [(conv1_bn1, spike_and_pool(model.lif1, encode=True)), (conv2_bn2, spike_and_pool(model.lif2))]
    if not per_sample:  # learnable neuron parameters: one piece (their gradients sum over the batch)
        blocks = [lambda x, lif, s=s, l=l: l(s(x), lif) for s, l in blocks]
    x, _ = recompute_block(blocks[0], images.reshape(batch, 1, 28, 28), (model.conv1, model.bn1, model.lif1),
                           spikes=False)
    x, _ = recompute_block(blocks[1], x, (model.conv2, model.bn2, model.lif2), spikes=True)
    # The fully connected layers are not recomputed (fc1 is a tenth of the step's time): their inputs
    # are kept as bits, the LIF layers after them keep their inputs (C*16 and 10 neurons per step).
    s3 = model.lif3(spike_linear(model.fc1, x.flatten(2)))
    return model.lif4(spike_linear(model.fc2, s3)).mean(dim=1)
