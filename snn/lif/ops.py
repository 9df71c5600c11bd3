"""Each backend's LIF as registered PyTorch operators: what torch.compile, torch.export and torch.func see.

:func:`register_lif_ops` turns one backend's host functions (a forward and a backward, the
signatures below) into two ``torch.library`` custom operators, ``snn::lif_fwd_<backend>`` and
``snn::lif_bwd_<backend>``, with fake (meta) implementations, autograd (``register_autograd`` with
``setup_context``) and a ``vmap`` rule, and returns the ``core`` that
:func:`snn.lif.spec.make_lif_function` wraps into the public signature. Registering a backend is
one line in its module::

    lif_torch = make_lif_function(register_lif_ops("torch", forward, backward), "lif_torch")

Compilers and tracers then see one opaque, correctly shaped and strided op per direction instead
of tracing into Python loops or the Triton interpreter. The schema carries everything a call
needs, as schema types: ``tau``/``thresh`` as ``Tensor?`` plus a ``float`` used when the tensor is
absent, ``v0`` as ``Tensor?``, the neuron's options, and the output flags. The options' part is
generated from the spec (one argument per ``dataclasses.fields(LIFSpec)`` field, typed by its
annotation), as are the argument packs :data:`FwdArgs` / :data:`BwdArgs` the implementations read
by name: an option added to :class:`~snn.lif.spec.LIFSpec` reaches the ops without an edit here.

Backend functions (``tau``/``thresh`` are floats or tensors; ``x`` is ``[B, T, ...]``, any strides)::

    forward(x, tau, thresh, spec, v0, save_h, return_v, time_major) -> (spikes, h | None, v | None)
    backward(grad_spikes | None, h, tau, thresh, spec, grad_v | None, v0 | None,
             need_tau, need_thresh, need_v0, grad_dtype, time_major) -> (g_x, g_tau, g_thresh, g_v0)

(With ``saves_input=True`` the backward gets the input ``x`` in ``h``'s place and recomputes ``h``.)

Output layout (what the fake implementations promise and the real ones are held to): spikes,
``h`` and ``g_x`` are :func:`snn.lif.spec.empty_like_input` buffers (contiguous ``[B, T, ...]``, or
``[T, B, ...]`` storage when ``time_major``); ``v``, ``g_v0`` and the parameter gradients are
contiguous. An output the call did not ask for is an empty ``[0]`` tensor (an op cannot return
None). ``h`` is returned when ``save_h`` (the backward needs it) and carries no gradient.

Per-call overhead. The public function calls the ``OpOverload`` directly (not the Python
``CustomOpDef`` wrapper), builds :class:`~snn.lif.spec.LIFSpec` once per distinct option set
(cached), and the layout check on the outputs is a stride comparison; plain eager calls skip the
dispatcher (:func:`_plain_eager`), and the fused CPU backend calls its kernel without an
``autograd.Function`` when no backward can follow (kernels/lif/cpu_launch.py). See
``python -m benchmarks.interleaved op-overhead`` for the measured cost.

torch.func. The LIF is independent per batch element, so the vmap rule moves a vmapped dimension
``V`` into the *neuron* dimensions (``[V, B, T, ...]`` -> ``[B, T, V, ...]``): batch elements stay
batch elements, and per-neuron ``tau``/``thresh`` are expanded to ``[V, ...]``. That handles a
batched ``tau``/``thresh`` (one per vmapped element) and keeps their gradients per vmapped element,
which is what per-sample gradients (``vmap(grad(f))``) need: folding ``V`` into ``B`` would sum them.

Tracing. ``torch.jit.trace`` (and the legacy ``torch.onnx.export(dynamo=False)`` built on it) is
refused by the public functions (:func:`snn.lif.spec.make_lif_function`): it would record the
spikes of the example input as a constant.
"""

import dataclasses
import functools
import types
import typing
from collections import namedtuple

import torch
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd.function import _SingleLevelFunction

from snn.lif.spec import LIFSpec, empty_like_input, surrogate_gradient

NAMESPACE = "snn"

# ---- the schemas, generated from the spec ------------------------------------------------------------
# Every LIFSpec field is one schema argument, typed by its annotation; an option added to the spec
# reaches both ops' schemas, their argument packs and the kernels' ``spec`` without an edit here.
_SCHEMA_TYPES = {str: "str", float: "float", bool: "bool", int: "int"}


def _schema_type(name: str, annotation) -> str:
    """The torch schema type of a spec field's annotation (``float | None`` -> ``float?``)."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = len(members) < len(typing.get_args(annotation)), members[0] if len(members) == 1 else None
    if annotation not in _SCHEMA_TYPES:
        raise TypeError(f"snn.lif.ops: LIFSpec.{name} is annotated {annotation!r}, which has no op schema type "
                        f"(give it one of {', '.join(t.__name__ for t in _SCHEMA_TYPES)}, optionally | None)")
    return _SCHEMA_TYPES[annotation] + ("?" if optional else "")


_SPEC_HINTS = typing.get_type_hints(LIFSpec)
SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(LIFSpec))
_SPEC_ARGS = tuple((name, _schema_type(name, _SPEC_HINTS[name])) for name in SPEC_FIELDS)

# (name, schema type) of each op's arguments, in schema order: the tensors and numbers of a call,
# the spec's fields, then the call's flags. ``tau``/``thresh`` are a ``Tensor?`` and the ``float``
# used when the tensor is absent.
FWD_ARGS = (
    ("x", "Tensor"), ("tau_t", "Tensor?"), ("tau", "float"), ("thresh_t", "Tensor?"), ("thresh", "float"),
    ("v0", "Tensor?"), *_SPEC_ARGS, ("save_h", "bool"), ("return_v", "bool"), ("time_major", "bool"),
)
FWD_OUTPUTS = ("spikes", "h", "v")
BWD_ARGS = (
    ("grad_spikes", "Tensor?"), ("h", "Tensor"), ("grad_v", "Tensor?"), ("tau_t", "Tensor?"), ("tau", "float"),
    ("thresh_t", "Tensor?"), ("thresh", "float"), ("v0", "Tensor?"), *_SPEC_ARGS, ("need_tau", "bool"),
    ("need_thresh", "bool"), ("need_v0", "bool"), ("grad_dtype", "ScalarType"), ("time_major", "bool"),
)
BWD_OUTPUTS = ("g_x", "g_tau", "g_thresh", "g_v0")

# The argument packs: ``FwdArgs(*inputs).v0`` instead of ``inputs[5]`` (also for in_dims and needs_input_grad).
FwdArgs = namedtuple("FwdArgs", [name for name, _ in FWD_ARGS])
BwdArgs = namedtuple("BwdArgs", [name for name, _ in BWD_ARGS])
FwdOutputs = namedtuple("FwdOutputs", FWD_OUTPUTS)
BwdOutputs = namedtuple("BwdOutputs", BWD_OUTPUTS)
# Where the spec's fields sit in each pack (contiguous, in the spec's order).
_FWD_SPEC = slice(FwdArgs._fields.index(SPEC_FIELDS[0]), FwdArgs._fields.index(SPEC_FIELDS[-1]) + 1)
_BWD_SPEC = slice(BwdArgs._fields.index(SPEC_FIELDS[0]), BwdArgs._fields.index(SPEC_FIELDS[-1]) + 1)
# The backward of the forward op returns one gradient per forward argument; these are the ones that can have one.
_NO_GRADS = FwdArgs(*(None,) * len(FwdArgs._fields))


def schema(args, outputs) -> str:
    """``(type name, ...) -> (Tensor, ...)`` for ``(name, type)`` pairs and output names (one output: ``-> Tensor``)."""
    returns = "Tensor" if len(outputs) == 1 else "(" + ", ".join("Tensor" for _ in outputs) + ")"
    return "(" + ", ".join(f"{kind} {name}" for name, kind in args) + ") -> " + returns


_FWD_SCHEMA = schema(FWD_ARGS, FWD_OUTPUTS)
_BWD_SCHEMA = schema(BWD_ARGS, BWD_OUTPUTS)

# name -> (forward OpOverload, backward OpOverload, the Library that holds them)
OPS: dict[str, tuple] = {}
# Plain eager calls skip the dispatcher (see _plain_eager); False sends every call through the op.
EAGER_FAST_PATH = True


@functools.lru_cache(maxsize=None)
def _spec(*options) -> LIFSpec:
    """The spec of the fields' values in :data:`SPEC_FIELDS` order (cached: one object per option set)."""
    return LIFSpec(*options)


def _options(spec: LIFSpec) -> tuple:
    """The spec's fields as the ops take them (:data:`SPEC_FIELDS` order)."""
    return tuple(getattr(spec, name) for name in SPEC_FIELDS)


def _spec_kwargs(spec: LIFSpec) -> dict:
    return dict(zip(SPEC_FIELDS, _options(spec)))


def _split(value):
    """A ``tau``/``thresh`` as the op's pair (tensor or None, float)."""
    return (value, 0.0) if isinstance(value, torch.Tensor) else (None, value)


def _join(tensor, number):
    return number if tensor is None else tensor


def _strides(shape, time_major: bool) -> tuple:
    """The strides of :func:`snn.lif.spec.empty_like_input` for ``shape``."""
    order = ([1, 0] + list(range(2, len(shape)))) if time_major else list(range(len(shape)))
    strides, step = [0] * len(shape), 1
    for dim in reversed(order):
        strides[dim] = step
        step *= max(shape[dim], 1)
    return tuple(strides)


def _conform(t: torch.Tensor, inputs, time_major: bool | None) -> torch.Tensor:
    """``t`` in the promised layout (``time_major`` None: contiguous), never one of the op's inputs."""
    if time_major is None:
        t = t.contiguous()
    elif not (t.transpose(0, 1) if time_major else t).is_contiguous() and t.stride() != _strides(t.shape, time_major):
        t = empty_like_input(t, time_major).copy_(t)
    if any(t is i for i in inputs):
        t = t.clone()
    return t


def _absent(like: torch.Tensor) -> torch.Tensor:
    """What an op returns for an output the call did not ask for (an op cannot return None): an empty ``[0]`` tensor."""
    return like.new_empty((0,))


def register_lif_ops(name: str, forward, backward, *, h_dtype=None, v_dtype=None, check=None, saves_input=False):
    """Register ``snn::lif_fwd_<name>`` / ``snn::lif_bwd_<name>`` and return the core for ``make_lif_function``.

    ``h_dtype(x_dtype, spec)`` is the dtype ``forward`` saves ``h`` in (default: the input's),
    ``v_dtype`` that of the final potential (default: the input's); ``check(x)`` runs before the op
    (a backend's own refusals: dtype, device). ``saves_input``: the backward recomputes ``h`` from
    the input, so autograd saves ``x`` and hands it to ``backward`` in ``h``'s place, and the
    forward writes ``h`` only when the caller asks for it (the fused C kernel, kernels/lif/cpu_launch.py).
    """
    h_dtype = h_dtype or (lambda x_dtype, spec: x_dtype)
    lib = torch.library.Library(NAMESPACE, "FRAGMENT")  # noqa: TOR901  (kept alive in OPS below)
    fwd_name, bwd_name = f"{NAMESPACE}::lif_fwd_{name}", f"{NAMESPACE}::lif_bwd_{name}"

    # ---- forward -------------------------------------------------------------------------------------
    def fwd_impl(*args, **kwargs):
        a = FwdArgs(*args, **kwargs)
        spec = _spec(*a[_FWD_SPEC])
        spikes, h, v = forward(a.x, _join(a.tau_t, a.tau), _join(a.thresh_t, a.thresh), spec, a.v0, a.save_h,
                               a.return_v, a.time_major)
        inputs = (a.x, a.tau_t, a.thresh_t, a.v0)
        spikes = _conform(spikes, inputs, a.time_major)
        h = _conform(h, inputs, a.time_major) if a.save_h else _absent(a.x)
        v = _conform(v, inputs, None) if a.return_v else _absent(a.x)
        return spikes, h, v

    def fwd_fake(*args, **kwargs):
        a = FwdArgs(*args, **kwargs)
        x, time_major = a.x, a.time_major
        spikes = empty_like_input(x, time_major)
        h = empty_like_input(x, time_major, h_dtype(x.dtype, _spec(*a[_FWD_SPEC]))) if a.save_h else _absent(x)
        step = (x.shape[0], *x.shape[2:])
        v = x.new_empty(step, dtype=v_dtype or x.dtype) if a.return_v else _absent(x)
        return spikes, h, v

    torch.library.define(fwd_name, _FWD_SCHEMA, lib=lib)
    torch.library.impl(fwd_name, "default", fwd_impl, lib=lib)
    torch.library.register_fake(fwd_name, fwd_fake, lib=lib)

    # ---- backward ------------------------------------------------------------------------------------
    def bwd_impl(*args, **kwargs):
        a = BwdArgs(*args, **kwargs)
        spec = _spec(*a[_BWD_SPEC])
        g_x, g_tau, g_thresh, g_v0 = backward(
            a.grad_spikes, a.h, _join(a.tau_t, a.tau), _join(a.thresh_t, a.thresh), spec, a.grad_v, a.v0,
            a.need_tau, a.need_thresh, a.need_v0, a.grad_dtype, a.time_major,
        )
        inputs = (a.grad_spikes, a.h, a.grad_v, a.tau_t, a.thresh_t, a.v0)
        return (
            _conform(g_x, inputs, a.time_major),
            _conform(g_tau, inputs, None) if a.need_tau else _absent(a.h),
            _conform(g_thresh, inputs, None) if a.need_thresh else _absent(a.h),
            _conform(g_v0, inputs, None) if a.need_v0 else _absent(a.h),
        )

    def bwd_fake(*args, **kwargs):
        a = BwdArgs(*args, **kwargs)
        return (
            empty_like_input(a.h, a.time_major, a.grad_dtype),
            a.tau_t.new_empty(a.tau_t.shape) if a.need_tau else _absent(a.h),
            a.thresh_t.new_empty(a.thresh_t.shape) if a.need_thresh else _absent(a.h),
            a.v0.new_empty(a.v0.shape) if a.need_v0 else _absent(a.h),
        )

    torch.library.define(bwd_name, _BWD_SCHEMA, lib=lib)
    torch.library.impl(bwd_name, "default", bwd_impl, lib=lib)
    torch.library.register_fake(bwd_name, bwd_fake, lib=lib)

    fwd_op = getattr(getattr(torch.ops, NAMESPACE), f"lif_fwd_{name}").default
    bwd_op = getattr(getattr(torch.ops, NAMESPACE), f"lif_bwd_{name}").default

    # ---- autograd ------------------------------------------------------------------------------------
    def setup_context(ctx, inputs, output):
        a = FwdArgs(*inputs)
        ctx.set_materialize_grads(False)  # an unused final potential must not become a 0 * inf carry
        ctx.mark_non_differentiable(output[1])  # h
        ctx.save_for_backward(a.x if saves_input else output[1], a.tau_t, a.thresh_t, a.v0)
        ctx.lif = (a.tau, a.thresh, _spec(*a[_FWD_SPEC]), a.x.dtype, a.time_major)

    def backward_formula(ctx, grad_spikes, _grad_h, grad_v, bwd=bwd_op):
        h, tau_t, thresh_t, v0 = ctx.saved_tensors
        tau, thresh, spec, x_dtype, time_major = ctx.lif
        if grad_spikes is None and grad_v is None:
            return _NO_GRADS
        needs = FwdArgs._make(ctx.needs_input_grad[:len(FwdArgs._fields)])  # (the dispatcher's Function has one more)
        g = BwdOutputs(*bwd(*BwdArgs(
            grad_spikes=grad_spikes, h=h, grad_v=grad_v, tau_t=tau_t, tau=tau, thresh_t=thresh_t, thresh=thresh,
            v0=v0, **_spec_kwargs(spec), need_tau=needs.tau_t, need_thresh=needs.thresh_t, need_v0=needs.v0,
            grad_dtype=x_dtype, time_major=time_major)))
        return _NO_GRADS._replace(x=g.g_x, tau_t=g.g_tau if needs.tau_t else None,
                                  thresh_t=g.g_thresh if needs.thresh_t else None, v0=g.g_v0 if needs.v0 else None)

    _register_autograd(lib, f"lif_fwd_{name}", fwd_op, setup_context, backward_formula)

    class EagerFunction(torch.autograd.Function):
        """The op's kernels and autograd formula without the dispatcher: the plain-eager fast path."""

        @staticmethod
        def forward(ctx, *args):
            output = fwd_impl(*args)
            setup_context(ctx, args, output)
            return output

        @staticmethod
        def backward(ctx, grad_spikes, grad_h, grad_v):
            return tuple(backward_formula(ctx, grad_spikes, grad_h, grad_v, bwd=bwd_impl))

    # ---- vmap: the vmapped dimension joins the neuron dimensions -------------------------------------
    def fwd_vmap(info, in_dims, *args):
        size = info.batch_size
        a, dims = FwdArgs(*args), FwdArgs(*in_dims)
        neuron_rank = a.x.dim() - (0 if dims.x is None else 1) - 2
        spikes, h, v = fwd_op(*a._replace(
            x=_vmapped_into_neurons(a.x, dims.x, size, lead=2),
            tau_t=_param_with_vmapped(a.tau_t, dims.tau_t, size, neuron_rank),
            thresh_t=_param_with_vmapped(a.thresh_t, dims.thresh_t, size, neuron_rank),
            v0=None if a.v0 is None else _vmapped_into_neurons(a.v0, dims.v0, size, lead=1)))
        return (
            (_neurons_to_front(spikes, 2), _neurons_to_front(h, 2) if a.save_h else h,
             _neurons_to_front(v, 1) if a.return_v else v),
            (0, 0 if a.save_h else None, 0 if a.return_v else None),
        )

    def bwd_vmap(info, in_dims, *args):
        size = info.batch_size
        a, dims = BwdArgs(*args), BwdArgs(*in_dims)
        neuron_rank = a.h.dim() - (0 if dims.h is None else 1) - 2
        tau_shape = None if a.tau_t is None else a.tau_t.shape[(0 if dims.tau_t is None else 1):]
        thresh_shape = None if a.thresh_t is None else a.thresh_t.shape[(0 if dims.thresh_t is None else 1):]
        g_x, g_tau, g_thresh, g_v0 = bwd_op(*a._replace(
            h=_vmapped_into_neurons(a.h, dims.h, size, lead=2),
            grad_spikes=None if a.grad_spikes is None else _vmapped_into_neurons(a.grad_spikes, dims.grad_spikes, size, lead=2),
            grad_v=None if a.grad_v is None else _vmapped_into_neurons(a.grad_v, dims.grad_v, size, lead=1),
            tau_t=_param_with_vmapped(a.tau_t, dims.tau_t, size, neuron_rank),
            thresh_t=_param_with_vmapped(a.thresh_t, dims.thresh_t, size, neuron_rank),
            v0=None if a.v0 is None else _vmapped_into_neurons(a.v0, dims.v0, size, lead=1)))
        return (
            (_neurons_to_front(g_x, 2),
             g_tau.reshape(size, *tau_shape) if a.need_tau else g_tau,
             g_thresh.reshape(size, *thresh_shape) if a.need_thresh else g_thresh,
             _neurons_to_front(g_v0, 1) if a.need_v0 else g_v0),
            (0, 0 if a.need_tau else None, 0 if a.need_thresh else None, 0 if a.need_v0 else None),
        )

    torch.library.register_vmap(fwd_name, fwd_vmap, lib=lib)
    torch.library.register_vmap(bwd_name, bwd_vmap, lib=lib)

    OPS[name] = (fwd_op, bwd_op, lib)

    def core(x, tau, thresh, spec, v0, return_v, return_h, time_major):
        if check is not None:
            check(x)
        tau_t, tau_f = _split(tau)
        thresh_t, thresh_f = _split(thresh)
        # Whether a backward can follow is decided here, outside the op (grad mode is off inside it).
        grad = backward_can_follow(x, tau_t, thresh_t, v0)
        save_h = return_h or (grad and not saves_input)
        args = FwdArgs(x=x, tau_t=tau_t, tau=tau_f, thresh_t=thresh_t, thresh=thresh_f, v0=v0, **_spec_kwargs(spec),
                       save_h=save_h, return_v=return_v, time_major=time_major)
        if EAGER_FAST_PATH and _plain_eager(x, tau_t, thresh_t, v0):
            spikes, h, v = EagerFunction.apply(*args) if grad or save_h else fwd_impl(*args)
        else:
            spikes, h, v = fwd_op(*args)
        return spikes, (v if return_v else None), (h.to(x.dtype) if return_h else None)

    core.__name__ = f"lif_core_{name}"
    return core


def backward_can_follow(*tensors) -> bool:
    """Grad mode is on and one of ``tensors`` (None entries skipped) requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _plain_eager(*tensors) -> bool:
    """True when nothing but eager autograd would see the op: no compiler, tracer, transform, mode or subclass.

    Then :func:`register_lif_ops`' core calls the op's own kernels and autograd formula through an
    ``autograd.Function``, skipping the dispatcher's two round trips into Python (forward: the
    autograd kernel and the implementation; ``python -m benchmarks.interleaved op-overhead`` measures what that
    saves). Anything else (torch.compile, torch.export, make_fx/AOTAutograd, torch.func, fake or
    other dispatch modes, torch-function modes, tensor subclasses) goes through the registered op.
    """
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
            or torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled()):
        return False
    return all(t is None or type(t) is torch.Tensor or type(t) is torch.nn.Parameter for t in tensors)


def _vmapped_into_neurons(t: torch.Tensor, dim, size: int, lead: int) -> torch.Tensor:
    """``t`` with vmapped ``dim`` (None: not vmapped) moved right after its ``lead`` dims ([B, T] or [B])."""
    if dim is None:
        t = t.unsqueeze(lead).expand(*t.shape[:lead], size, *t.shape[lead:])
        return t
    return t.movedim(dim, lead)


def _neurons_to_front(t: torch.Tensor, lead: int) -> torch.Tensor:
    """Inverse of :func:`_vmapped_into_neurons`: the vmapped dim (right after ``lead`` dims) to the front."""
    return t.movedim(lead, 0)


def _param_with_vmapped(p, dim, size: int, neuron_rank: int):
    """A ``tau``/``thresh`` tensor as ``[V, ...]`` broadcastable over ``[V, *neurons]`` (None stays None)."""
    if p is None:
        return None
    if dim is None:
        p = p.unsqueeze(0).expand(size, *p.shape)
    else:
        p = p.movedim(dim, 0)
    pad = neuron_rank - (p.dim() - 1)
    return p.reshape(size, *([1] * pad), *p.shape[1:])


def _register_autograd(lib, name: str, op, setup_context, backward_formula) -> None:
    """``torch.library.register_autograd(op, backward_formula, setup_context=...)``, usable under torch.func.grad.

    The Function that ``register_autograd`` generates is refused by ``torch.func.grad`` in this torch
    (pytorch/pytorch#170834, fixed upstream by deriving it from a single-level Function, as here).
    ``backward_formula(ctx, *grads)`` returns one gradient per op input.
    """

    class Function(_SingleLevelFunction):
        @staticmethod
        def forward(ctx, *args):
            keyset = args[-1]
            with torch._C._AutoDispatchBelowAutograd():
                output = op.redispatch(keyset & torch._C._after_autograd_keyset, *args[:-1])
            setup_context(ctx, args[:-1], output)
            return output

        @staticmethod
        def backward(ctx, *grads):
            return (*backward_formula(ctx, *grads), None)

    Function.__name__ = Function.__qualname__ = f"{name}_autograd"

    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            with enable_single_level_autograd_function():
                return Function.apply(*args, keyset)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)

    lib.impl(name, autograd_kernel, "Autograd", with_keyset=True)


# ---- the reference's Heaviside with a surrogate gradient, as an op -----------------------------------
# The reference (snn/lif/reference.py) is autograd of the seed's loop; its spike function (the seed's ZIF) is this
# op rather than an autograd.Function, because Dynamo cannot trace an autograd.Function whose backward
# reads a Python float (alpha) more than once per graph under torch.compile(dynamic=True). It saves
# its input and output, as the seed's ZIF did.
_surrogate_lib = torch.library.Library(NAMESPACE, "FRAGMENT")  # noqa: TOR901
_SURROGATE_ARGS = (("z", "Tensor"), *((name, kind) for name, kind in _SPEC_ARGS if name in ("surrogate", "alpha")))
torch.library.define(f"{NAMESPACE}::surrogate_spike", schema(_SURROGATE_ARGS, ("spike",)),
                     lib=_surrogate_lib)


@functools.lru_cache(maxsize=None)
def _surrogate_spec(surrogate, alpha) -> LIFSpec:
    """The default neuron with this surrogate (what surrogate_gradient reads)."""
    return LIFSpec(surrogate=surrogate, alpha=alpha)


def _surrogate_spike_impl(z, surrogate, alpha):
    return (z > 0).to(z.dtype)


def _surrogate_spike_setup(ctx, inputs, output):
    z, surrogate, alpha = inputs
    ctx.save_for_backward(z, output)
    ctx.spec = _surrogate_spec(surrogate, alpha)


def _surrogate_spike_backward(ctx, grad_spike):
    z, _spike = ctx.saved_tensors
    return grad_spike * surrogate_gradient(z, ctx.spec), None, None


torch.library.impl(f"{NAMESPACE}::surrogate_spike", "default", _surrogate_spike_impl, lib=_surrogate_lib)
torch.library.register_fake(f"{NAMESPACE}::surrogate_spike", lambda z, surrogate, alpha: torch.empty_like(z),
                            lib=_surrogate_lib)
_surrogate_spike_op = torch.ops.snn.surrogate_spike.default
_register_autograd(_surrogate_lib, "surrogate_spike", _surrogate_spike_op, _surrogate_spike_setup,
                   _surrogate_spike_backward)
# Elementwise: a vmapped dimension is one more dimension of z.
torch.library.register_vmap(f"{NAMESPACE}::surrogate_spike",
                            lambda info, in_dims, z, surrogate, alpha: (_surrogate_spike_op(z, surrogate, alpha), in_dims[0]),
                            lib=_surrogate_lib)


def surrogate_spike(z: torch.Tensor, spec: LIFSpec) -> torch.Tensor:
    """Heaviside ``(z > 0)`` forward, the spec's surrogate ``sg(z)`` backward (``snn::surrogate_spike``)."""
    return _surrogate_spike_op(z, spec.surrogate, spec.alpha)
