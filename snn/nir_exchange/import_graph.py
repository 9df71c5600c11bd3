"""Import: a ``nir.NIRGraph`` (a chain of nodes) back to our layers, as a trainable :class:`NIRNetwork`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from snn.lif.layers import LIFSpike, TimeDistributed, direct_encode
from snn.nir_exchange.neuron import DEFAULT_DT, NIRExchangeError, lif_from_nir, require_nir


class NIRNetwork(nn.Sequential):
    """Our layers built from a NIR graph: ``forward(x [B, T, *input_shape]) -> [B, T, *output_shape]``.

    Layers: ``TimeDistributed(Linear/Conv2d/AvgPool2d/Flatten)`` and :class:`LIFSpike` (any backend,
    so the network trains and infers on our kernels). ``metadata`` is the graph's.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], input_shape: tuple[int, ...], metadata: dict, dt: float):
        super().__init__()
        for name, layer in layers:
            self.add_module(name, layer)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.metadata = dict(metadata)
        self.dt = dt

    def classify(self, inputs: torch.Tensor, time_steps: int | None = None) -> torch.Tensor:
        """The direct-encoding readout: ``inputs [B, ...]`` shown at every one of ``time_steps`` steps
        (default: the graph's ``time_steps``), output averaged over time: ``[B, ...]``.

        Computed as :class:`snn.model.SpikingMLP` does, exact identities of this readout: the layers
        before the first LIF see the same input at every step, so they run once and their output is
        broadcast over T; affine layers after the last LIF commute with the mean, so they run on it.
        """
        time_steps = time_steps if time_steps is not None else self.metadata.get("time_steps")
        if time_steps is None:
            raise ValueError("classify needs time_steps (the graph's metadata does not give it)")
        layers = list(self)
        neurons = [i for i, layer in enumerate(layers) if isinstance(layer, LIFSpike)]
        first = neurons[0] if neurons else len(layers)
        last = neurons[-1] if neurons else len(layers)
        x = inputs.reshape(inputs.shape[0], *self.input_shape)
        for layer in layers[:first]:
            x = layer.module(x)
        x = direct_encode(x, int(time_steps))
        tail = layers[last + 1:]
        if all(isinstance(layer, TimeDistributed) and isinstance(layer.module, nn.Linear) for layer in tail):
            for layer in layers[first:last + 1]:
                x = layer(x)
            x = x.mean(dim=1)
            for layer in tail:
                x = layer.module(x)
            return x
        for layer in layers[first:]:
            x = layer(x)
        return x.mean(dim=1)


def import_nir(graph, dt: float | None = None, backend: str = "torch", learn_tau: bool = False,
               learn_thresh: bool = False) -> NIRNetwork:
    """A :class:`NIRNetwork` of our layers from a ``nir.NIRGraph`` or a NIR file.

    ``dt``: the simulation step the graph is read at (default: the graph's ``metadata["dt"]``, else
    :data:`DEFAULT_DT`, the one snnTorch and SpikingJelly use). The graph must be one chain
    ``Input -> ... -> Output`` of ``Affine``, ``Linear``, ``Conv2d``, ``AvgPool2d``, ``SumPool2d``,
    ``Flatten``, ``LIF`` and ``IF`` nodes; anything else is refused with a sentence naming the node.
    ``learn_tau`` / ``learn_thresh`` make the neurons' decays / thresholds per-neuron parameters.
    """
    nir = require_nir()
    if isinstance(graph, (str, Path)):
        graph = nir.read(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise NIRExchangeError(f"import_nir takes a nir.NIRGraph or the path of a NIR file, not {type(graph).__name__}.")
    metadata = dict(graph.metadata or {})
    dt = float(metadata.get("dt", DEFAULT_DT)) if dt is None else float(dt)
    if not (np.isfinite(dt) and dt > 0):
        raise NIRExchangeError(f"dt must be a positive number of seconds, got {dt!r}.")
    chain = _chain_of(graph)
    input_shape = tuple(np.asarray(graph.nodes[chain[0]].input_type["input"]).tolist())
    layers = []
    for name in chain[1:-1]:
        node = graph.nodes[name]
        layer = _layer_of(node, f"node {name!r} ({type(node).__name__})", dt, backend, learn_tau, learn_thresh)
        layers.append((_module_name(name, len(layers)), layer))
    return NIRNetwork(layers, input_shape, metadata, dt)


def _chain_of(graph) -> list[str]:
    """The node names from the one Input to the one Output, refusing anything but a simple chain."""
    nir = require_nir()
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRExchangeError(f"the graph has {len(inputs)} inputs and {len(outputs)} outputs; only one of each is supported.")
    successors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    predecessors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target in graph.edges:
        successors[source].append(target)
        predecessors[target].append(source)
    chain = [inputs[0]]
    while chain[-1] != outputs[0]:
        name = chain[-1]
        if len(successors[name]) != 1:
            raise NIRExchangeError(f"node {name!r} feeds {len(successors[name])} nodes; only a chain of nodes (no branches) is supported.")
        following = successors[name][0]
        if following in chain or len(predecessors[following]) != 1:
            raise NIRExchangeError(f"node {following!r} has {len(predecessors[following])} inputs or closes a loop; "
                                   "recurrent and merging graphs are not supported.")
        chain.append(following)
    if len(chain) != len(graph.nodes):
        unused = sorted(set(graph.nodes) - set(chain))
        raise NIRExchangeError(f"nodes {unused} are not on the path from input to output; only a chain is supported.")
    return chain


def _module_name(name: str, index: int) -> str:
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return clean if clean and not clean[0].isdigit() else f"layer{index}_{clean}"


def _layer_of(node, where: str, dt: float, backend: str, learn_tau: bool, learn_thresh: bool) -> nn.Module:
    nir = require_nir()
    if isinstance(node, (nir.LIF, nir.IF)):
        args = lif_from_nir(node, dt, where)
        shape = tuple(np.asarray(node.v_threshold).shape)
        return LIFSpike(args["tau"], args["thresh"], v_reset=args["v_reset"], learn_tau=learn_tau,
                        learn_thresh=learn_thresh, param_shape=shape, backend=backend)
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        has_bias = isinstance(node, nir.Affine)
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if has_bias:
                layer.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return TimeDistributed(layer)
    if isinstance(node, nir.Conv2d):
        weight = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        groups = int(np.asarray(node.groups))
        padding = node.padding if isinstance(node.padding, str) else tuple(int(p) for p in np.atleast_1d(node.padding))
        layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                          stride=tuple(int(s) for s in np.atleast_1d(node.stride)), padding=padding,
                          dilation=tuple(int(d) for d in np.atleast_1d(node.dilation)), groups=groups)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return TimeDistributed(layer)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        kernel, stride, padding = (tuple(int(v) for v in np.atleast_1d(a)) for a in (node.kernel_size, node.stride, node.padding))
        divisor = 1 if isinstance(node, nir.SumPool2d) else None
        return TimeDistributed(nn.AvgPool2d(kernel, stride, padding, divisor_override=divisor))
    if isinstance(node, nir.Flatten):
        start, end = (d + 1 if d >= 0 else d for d in (int(node.start_dim), int(node.end_dim)))  # add the batch dim
        return TimeDistributed(nn.Flatten(start, end))
    raise NIRExchangeError(f"{where}: this node has no counterpart in snn-lif's layers "
                           "(supported: Affine, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, LIF, IF).")
