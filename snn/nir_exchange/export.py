"""Export: networks made of our layers (and the checkpoints of train.py) to a ``nir.NIRGraph``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snn.lif.layers import LIFSpike, TimeDistributed
from snn.lif.spec import LIFSpec
from snn.nir_exchange.neuron import DEFAULT_DT, NIRExchangeError, lif_to_nir, require_nir

# The names of the exported nodes, by layer type
LAYER_KINDS = {nn.Linear: "linear", nn.Conv2d: "conv", LIFSpike: "lif", nn.AvgPool2d: "pool", nn.Flatten: "flatten"}


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
    nir = require_nir()
    nodes: list[tuple[str, object]] = []
    previous = None  # the last Linear/Conv2d (name, module, input shape) a BatchNorm may fold into
    for name, layer in layers:
        node_name = name.replace(".", "_")
        if node_name[:1].isdigit():  # a Sequential's index: say what the node is
            node_name = f"{LAYER_KINDS.get(type(layer), type(layer).__name__.lower())}{node_name}"
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
    nir = require_nir()
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
    nir = require_nir()
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
    nir = require_nir()
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

    nir = require_nir()
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
        require_nir()
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
          "the output over them (snn/nir_exchange/)")
    return 0
