"""NIR interchange: networks made of our layers to a ``nir.NIRGraph`` and NIR graphs back to our layers.

NIR (the Neuromorphic Intermediate Representation, package ``nir``) describes a network as a graph
of continuous-time nodes that every consumer simulates with its own time step ``dt``. Our LIF is the
discrete neuron of :mod:`snn.lif.spec` (``h = v*tau + x``; ``tau`` there is the per-step *decay*).
Forward-Euler of NIR's ``LIF`` (``tau_m dv/dt = (v_leak - v) + r*I``) over one step ``dt`` is
``v <- (1 - dt/tau_m) * v + (r*dt/tau_m) * I + (dt/tau_m) * v_leak``, so our neuron is exactly::

    nir.LIF(tau = dt / (1 - decay), r = tau / dt  (so r*dt/tau == 1), v_leak = 0,
            v_threshold = thresh, v_reset = v_reset)          for 0 <= decay < 1
    nir.IF(r = 1 / dt, v_threshold = thresh, v_reset = v_reset)   for decay == 1 (no leak)

the mapping snnTorch (``beta = 1 - dt/tau``) and SpikingJelly (``tau_sj = tau / dt``) use, at their
``dt = 1e-4`` (:data:`DEFAULT_DT`). NIR's threshold is strict (``v > v_threshold``), like ours.

What NIR cannot say is refused, in one sentence naming the layer or node (:class:`NIRExchangeError`):
a soft (subtract) reset (NIR's neurons reset to ``v_reset``), decays outside ``[0, 1]``, max pooling
(NIR 1.0 has no such node), other layers; on import, nodes without a counterpart in our layers, a
``v_leak`` other than 0, ``r*dt/tau != 1``, a per-neuron ``v_reset``, graphs that are not a chain.
Training-only options are dropped, because they do not change the forward: the surrogate and its
``alpha``, ``detach_reset``, ``learn_tau``/``learn_thresh`` (the values are exported), the backend
and ``time_dim``. BatchNorm (no NIR node) is folded into the preceding Linear/Conv2d with its running
statistics, i.e. as it computes in eval mode.

A NIR graph computes per time step: the imported :class:`NIRNetwork` maps ``[B, T, ...]`` to
``[B, T, ...]``. :class:`snn.model.SpikingMLP` is exported as ``Affine -> LIF -> Affine -> LIF ->
Affine``; its output, the mean over T of ``fc3`` (equal to ``fc3`` of the mean spikes: ``fc3`` is
affine), is the mean over T of the graph's per-step output, and its direct encoding presents the
image at every step. The graph's metadata says so (``time_steps``, ``encoding``, ``readout``), and
:meth:`NIRNetwork.classify` computes that readout the way ``SpikingMLP`` does, to the same bits.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snn.lif.layers import LIFSpike, TimeDistributed, direct_encode
from snn.lif.spec import LIFSpec

DEFAULT_DT = 1e-4  # seconds per step: the dt snnTorch's importer hard-codes and SpikingJelly's defaults to
RTOL = 1e-6  # how close r*dt/tau must be to 1 (NIR stores float64 arrays, written by float32 models)


_KINDS = {nn.Linear: "linear", nn.Conv2d: "conv", LIFSpike: "lif", nn.AvgPool2d: "pool", nn.Flatten: "flatten"}


class NIRExchangeError(ValueError):
    """A layer, option or NIR node the exchange cannot map (the message names it and says why)."""


def _nir():
    try:
        import nir
    except ImportError as exc:  # nir is an optional dependency of the project
        raise ImportError("NIR interchange needs the package `nir` (pip install nir)") from exc
    return nir


# ---------------------------------------------------------------------------------------------- neuron

def lif_to_nir(decay, thresh, v_reset: float, shape: tuple[int, ...], dt: float = DEFAULT_DT, where: str = "LIF"):
    """The NIR node of our LIF with per-step decay ``decay`` and threshold ``thresh`` (numbers or
    tensors broadcastable to the neuron ``shape``) and hard reset to ``v_reset``, at step ``dt``."""
    nir = _nir()
    decay = _full(decay, shape)
    thresh = _full(thresh, shape)
    if not np.isfinite(decay).all() or ((decay < 0) | (decay > 1)).any():
        raise NIRExchangeError(f"{where}: a decay tau outside [0, 1] has no NIR time constant "
                               f"(got values in [{decay.min()}, {decay.max()}]).")
    if not np.isfinite(thresh).all():
        raise NIRExchangeError(f"{where}: the threshold must be finite to be exported.")
    v_reset = np.full(shape, float(v_reset))
    if (decay == 1).all():
        return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=thresh, v_reset=v_reset)
    if (decay == 1).any():
        raise NIRExchangeError(f"{where}: some neurons have decay 1 (no leak, NIR's IF) and others leak (NIR's LIF); "
                               "one NIR node cannot hold both.")
    tau = dt / (1.0 - decay)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(shape), v_threshold=thresh, v_reset=v_reset)


def lif_from_nir(node, dt: float, where: str) -> dict:
    """``LIFSpike`` arguments (``tau``, ``thresh``, ``v_reset``) of a NIR ``LIF``/``IF`` node at step ``dt``."""
    nir = _nir()
    v_reset = np.asarray(node.v_reset, dtype=np.float64)
    if np.unique(v_reset).size != 1:
        raise NIRExchangeError(f"{where}: a per-neuron v_reset has no counterpart (our v_reset is one number per layer).")
    if isinstance(node, nir.IF):
        scale = np.asarray(node.r, dtype=np.float64) * dt
        decay = np.ones_like(scale)
    else:
        tau = np.asarray(node.tau, dtype=np.float64)
        if not (np.asarray(node.v_leak) == 0).all():
            raise NIRExchangeError(f"{where}: v_leak != 0 (a leak toward v_leak) has no counterpart: our LIF leaks toward 0.")
        if not (np.isfinite(tau).all() and (tau >= dt).all()):
            raise NIRExchangeError(f"{where}: tau must be finite and at least dt = {dt} (a decay 1 - dt/tau in [0, 1)).")
        scale = np.asarray(node.r, dtype=np.float64) * dt / tau
        decay = 1.0 - dt / tau
    if not np.allclose(scale, 1.0, rtol=RTOL, atol=0):
        raise NIRExchangeError(
            f"{where}: r*dt/tau is {float(np.min(scale)):g} to {float(np.max(scale)):g} at dt = {dt}, not 1: this neuron "
            "scales its input, ours adds it (h = v*tau + x); pass the dt the graph was made for.")
    return {"tau": _compact(decay), "thresh": _compact(np.asarray(node.v_threshold, dtype=np.float64)),
            "v_reset": float(v_reset.flat[0])}


def _full(value, shape) -> np.ndarray:
    """``value`` (number or tensor) as a float64 array of the neuron ``shape``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()


def _compact(values: np.ndarray):
    """One float where every neuron has the same value, else a float32 tensor of the neuron shape."""
    values = values.astype(np.float32)
    unique = np.unique(values)
    return float(unique[0]) if unique.size == 1 else torch.from_numpy(values.copy())


# ---------------------------------------------------------------------------------------------- export

def export_nir(model: nn.Module, input_shape: tuple[int, ...] | None = None, dt: float = DEFAULT_DT,
               time_steps: int | None = None):
    """``model`` as a ``nir.NIRGraph`` at simulation step ``dt`` (seconds).

    ``model`` is a :class:`snn.model.SpikingMLP`, or an ``nn.Sequential`` over ``[B, T, ...]`` made of
    ``TimeDistributed(...)`` per-step layers (``Linear``, ``Conv2d``, ``BatchNorm1d/2d`` after one of
    them, ``AvgPool2d``, ``Flatten``, ``Dropout``/``Identity``, or an ``nn.Sequential`` of those), bare
    ``nn.Linear`` layers and :class:`LIFSpike` layers. ``input_shape`` is one sample's shape at one step
    (e.g. ``(1, 28, 28)``; not needed for ``SpikingMLP``); ``time_steps`` is recorded in the metadata.
    """
    from snn.model import SpikingMLP

    if not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
        raise NIRExchangeError(f"dt must be a positive number of seconds, got {dt!r}.")
    metadata = {"source": "snn-lif", "dt": float(dt)}
    if isinstance(model, SpikingMLP):
        config = model.config
        layers = [("fc1", model.fc1), ("lif1", model.lif1), ("fc2", model.fc2), ("lif2", model.lif2), ("fc3", model.fc3)]
        input_shape = (config.in_features,) if input_shape is None else tuple(input_shape)
        time_steps = config.time_steps if time_steps is None else time_steps
        metadata.update(encoding="direct: the same input at every step",
                        readout="mean over the time steps of the output")
    elif isinstance(model, nn.Sequential):
        if input_shape is None:
            raise NIRExchangeError("export_nir needs input_shape (one sample at one step, e.g. (1, 28, 28)) for an nn.Sequential.")
        layers = list(_sequential_layers(model))
    else:
        raise NIRExchangeError(f"export_nir takes a SpikingMLP or an nn.Sequential of our layers, not {type(model).__name__}.")
    if time_steps is not None:
        metadata["time_steps"] = int(time_steps)
    nodes = _export_layers(layers, tuple(input_shape), dt)
    return _chain_graph(nodes, tuple(input_shape), metadata)


def _sequential_layers(model: nn.Sequential, prefix: str = ""):
    """(name, layer) pairs with the TimeDistributed wrappers and nested Sequentials opened."""
    for name, layer in model.named_children():
        path = f"{prefix}{name}"
        if isinstance(layer, TimeDistributed):
            inner = layer.module
            if isinstance(inner, nn.Sequential):
                for sub_name, sub in _sequential_layers(inner, f"{path}."):
                    yield sub_name, _per_sample(sub, sub_name)
            else:
                yield path, _per_sample(inner, path)
        elif isinstance(layer, nn.Sequential):
            yield from _sequential_layers(layer, f"{path}.")
        elif isinstance(layer, (LIFSpike, nn.Linear, nn.Dropout, nn.Identity)):
            yield path, layer  # a bare Linear acts on the last dim of [B, T, N]: the same per step
        else:
            raise NIRExchangeError(f"layer {path} ({type(layer).__name__}) over [B, T, ...] has no NIR export: "
                                   "wrap per-step layers in TimeDistributed.")


def _per_sample(layer: nn.Module, path: str) -> nn.Module:
    if isinstance(layer, LIFSpike):
        raise NIRExchangeError(f"layer {path}: a LIFSpike inside TimeDistributed would see T folded into the batch.")
    return layer


def _export_layers(layers, shape: tuple[int, ...], dt: float) -> list[tuple[str, object]]:
    """NIR nodes of the layers, tracking one sample's shape through them (BatchNorm folded)."""
    nir = _nir()
    nodes: list[tuple[str, object]] = []
    previous = None  # the last Linear/Conv2d (name, module, input shape) a BatchNorm may fold into
    for name, layer in layers:
        node_name = name.replace(".", "_")
        if node_name[:1].isdigit():  # a Sequential's index: say what the node is
            node_name = f"{_KINDS.get(type(layer), type(layer).__name__.lower())}{node_name}"
        where = f"layer {name} ({type(layer).__name__})"
        in_shape = shape
        if isinstance(layer, LIFSpike):
            _check_exportable(layer, where)
            node = lif_to_nir(layer.tau, layer.thresh, layer.spec.v_reset, shape, dt, where)
        elif isinstance(layer, (nn.Linear, nn.Conv2d)):
            node = _weight_node(layer.weight.detach(), None if layer.bias is None else layer.bias.detach(), layer, shape, where)
            previous = (node_name, layer, shape)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if previous is None or nodes[-1][0] != previous[0]:
                raise NIRExchangeError(f"{where}: NIR has no batch-norm node; it can only be folded into a Linear/Conv2d right before it.")
            weight, bias = _fold_batch_norm(previous[1], layer, where)
            nodes[-1] = (previous[0], _weight_node(weight, bias, previous[1], previous[2], where))
            shape = _shape_after(layer, shape)
            continue
        elif isinstance(layer, nn.AvgPool2d):
            node = _pool_node(layer, where)
        elif isinstance(layer, nn.MaxPool2d):
            raise NIRExchangeError(f"{where}: NIR 1.0 has no max-pooling node (it has AvgPool2d and SumPool2d).")
        elif isinstance(layer, nn.Flatten):
            start, end = (d - 1 if d > 0 else d for d in (layer.start_dim, layer.end_dim))  # without the batch dim
            if start < 0 and layer.start_dim == 0:
                raise NIRExchangeError(f"{where}: flattening the batch dimension has no NIR node.")
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start, end_dim=end)
        elif isinstance(layer, (nn.Dropout, nn.Identity)):
            continue  # the identity at inference
        else:
            raise NIRExchangeError(f"{where}: this layer has no NIR node.")
        shape = _shape_after(layer, in_shape)
        nodes.append((node_name, node))
    return nodes


def _check_exportable(layer: LIFSpike, where: str) -> None:
    spec: LIFSpec = layer.spec
    if spec.reset != "hard":
        raise NIRExchangeError(f"{where}: reset={spec.reset!r} (subtract the threshold) has no NIR node: NIR's LIF and IF "
                               "reset to v_reset.")
    if getattr(layer, "input_scale", 1.0) != 1.0:
        raise NIRExchangeError(f"{where}: input_scale={layer.input_scale} is not exported; fold it into the layer before.")
    if layer.time_dim != 1:
        raise NIRExchangeError(f"{where}: export layers with time_dim=1 ([B, T, ...]) so the graph's layout is known.")


def _weight_node(weight: torch.Tensor, bias: torch.Tensor | None, layer: nn.Module, shape, where: str):
    nir = _nir()
    w = weight.cpu().numpy()
    if isinstance(layer, nn.Linear):
        return nir.Linear(weight=w) if bias is None else nir.Affine(weight=w, bias=bias.cpu().numpy())
    if layer.padding_mode != "zeros":
        raise NIRExchangeError(f"{where}: padding_mode={layer.padding_mode!r} has no NIR form (NIR pads with zeros).")
    if len(shape) != 3:
        raise NIRExchangeError(f"{where}: a Conv2d needs a [C, H, W] input, got one of shape {shape}.")
    b = np.zeros(w.shape[0], dtype=w.dtype) if bias is None else bias.cpu().numpy()
    return nir.Conv2d(input_shape=tuple(shape[1:]), weight=w, stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, groups=layer.groups, bias=b)


def _fold_batch_norm(layer: nn.Module, norm: nn.Module, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``norm(layer(x))`` with the running statistics (eval-mode batch norm)."""
    if norm.running_mean is None:
        raise NIRExchangeError(f"{where}: a batch norm without running statistics (track_running_stats=False) cannot be folded.")
    scale = norm.weight.detach().double() if norm.affine else torch.ones_like(norm.running_var, dtype=torch.float64)
    shift = norm.bias.detach().double() if norm.affine else torch.zeros_like(scale)
    scale = scale / torch.sqrt(norm.running_var.double() + norm.eps)
    weight = layer.weight.detach().double() * scale.reshape(-1, *([1] * (layer.weight.dim() - 1)))
    bias = torch.zeros_like(scale) if layer.bias is None else layer.bias.detach().double()
    bias = (bias - norm.running_mean.double()) * scale + shift
    return weight.to(layer.weight.dtype), bias.to(layer.weight.dtype)


def _pool_node(layer: nn.AvgPool2d, where: str):
    nir = _nir()
    pair = nn.modules.utils._pair
    kernel, stride, padding = pair(layer.kernel_size), pair(layer.stride or layer.kernel_size), pair(layer.padding)
    if layer.ceil_mode:
        raise NIRExchangeError(f"{where}: ceil_mode=True has no NIR form.")
    if any(padding) and not layer.count_include_pad:
        raise NIRExchangeError(f"{where}: count_include_pad=False with padding has no NIR form.")
    args = dict(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
    if layer.divisor_override == 1:
        return nir.SumPool2d(**args)
    if layer.divisor_override not in (None, kernel[0] * kernel[1]):
        raise NIRExchangeError(f"{where}: divisor_override={layer.divisor_override} has no NIR form.")
    return nir.AvgPool2d(**args)


@torch.no_grad()
def _shape_after(layer: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(layer, LIFSpike):
        return shape
    was_training = layer.training
    layer.eval()  # batch norm on one zero sample
    try:
        probe = torch.zeros(1, *shape, dtype=_dtype_of(layer), device=_device_of(layer))
        return tuple(layer(probe).shape[1:])
    except RuntimeError as exc:
        raise NIRExchangeError(f"layer {type(layer).__name__} does not take one sample of shape {shape}: {exc}") from None
    finally:
        layer.train(was_training)


def _dtype_of(layer: nn.Module) -> torch.dtype:
    return next((p.dtype for p in layer.parameters()), torch.float32)


def _device_of(layer: nn.Module) -> torch.device:
    return next((p.device for p in layer.parameters()), torch.device("cpu"))


def _chain_graph(nodes, input_shape: tuple[int, ...], metadata: dict):
    nir = _nir()
    if not nodes:
        raise NIRExchangeError("the model has no layer to export.")
    names = ["input", *(name for name, _ in nodes), "output"]
    graph_nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)}), **dict(nodes)}
    last = nodes[-1][1]
    graph_nodes["output"] = nir.Output(output_type={"output": None})
    graph = nir.NIRGraph(nodes=graph_nodes, edges=list(zip(names[:-1], names[1:])), metadata=metadata, type_check=False)
    graph.infer_types()
    graph.nodes["output"] = nir.Output(output_type={"output": np.array(last.output_type["output"])})
    graph._update_input_output_types()
    graph.check_types()
    return graph


def write_nir(model: nn.Module, path: str | Path, **export_args) -> None:
    """Export ``model`` (see :func:`export_nir`) and write the graph to ``path`` (HDF5, atomically)."""
    from snn.safe_files import atomic_write

    nir = _nir()
    graph = export_nir(model, **export_args)
    buffer = io.BytesIO()  # h5py reads back what it writes: build the file in memory, then write it atomically
    nir.write(buffer, graph)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()), what="NIR file")


def export_checkpoint(checkpoint: str | Path, path: str | Path, dt: float = DEFAULT_DT) -> int:
    """``infer.py --export-nir``: the trained model of ``checkpoint`` as a new NIR file ``path``.

    Refuses to replace an existing file (it may be a model too) and turns every refusal into one
    :class:`snn.errors.UserError` sentence.
    """
    from snn.checkpoint import load_checkpoint, model_from_checkpoint
    from snn.safe_files import check_output_file
    from snn.errors import UserError

    try:
        _nir()
    except ImportError as exc:
        raise UserError(f"--export-nir needs the package nir: pip install nir ({exc}).") from None
    path = Path(path)
    if path.exists():
        raise UserError(f"--export-nir {path}: the file exists; remove it or choose another path.")
    check_output_file(path, "NIR file")
    model = model_from_checkpoint(load_checkpoint(checkpoint), "torch", checkpoint)
    try:
        write_nir(model, path, dt=dt)
    except NIRExchangeError as exc:
        raise UserError(f"--export-nir: {exc}") from None
    config = model.config
    print(f"wrote {path}: NIR graph of the spiking MLP {config.in_features}-{config.hidden}-{config.hidden}-"
          f"{config.num_classes} at dt = {dt} s; feed each image at all {config.time_steps} steps and average "
          "the output over them (snn/nir_exchange.py)")
    return 0


# ---------------------------------------------------------------------------------------------- import

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
    nir = _nir()
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
    nir = _nir()
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
    nir = _nir()
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
