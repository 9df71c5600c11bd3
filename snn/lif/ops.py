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
needs, as schema types: the neuron's options (:class:`snn.lif.spec.LIFSpec` fields as str/float/
bool), ``tau``/``thresh`` as ``Tensor?`` plus a ``float`` used when the tensor is absent, ``v0``
as ``Tensor?``, and the output flags.

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
(cached), and the layout check on the outputs is a stride comparison; see
``benchmarks/op_overhead.py`` for the measured cost.

torch.func. The LIF is independent per batch element, so the vmap rule moves a vmapped dimension
``V`` into the *neuron* dimensions (``[V, B, T, ...]`` -> ``[B, T, V, ...]``): batch elements stay
batch elements, and per-neuron ``tau``/``thresh`` are expanded to ``[V, ...]``. That handles a
batched ``tau``/``thresh`` (one per vmapped element) and keeps their gradients per vmapped element,
which is what per-sample gradients (``vmap(grad(f))``) need: folding ``V`` into ``B`` would sum them.

Tracing. ``torch.jit.trace`` (and the legacy ``torch.onnx.export(dynamo=False)`` built on it) is
refused by the public functions (:func:`snn.lif.spec.make_lif_function`): it would record the
spikes of the example input as a constant.
"""

import functools

import torch
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd.function import _SingleLevelFunction

from snn.lif.spec import LIFSpec, empty_like_input, surrogate_gradient

NAMESPACE = "snn"
_OPTIONS = "str reset, float v_reset, bool detach_reset, str surrogate, float? alpha"
_FWD_SCHEMA = (
    "(Tensor x, Tensor? tau_t, float tau, Tensor? thresh_t, float thresh, Tensor? v0, " + _OPTIONS
    + ", bool save_h, bool return_v, bool time_major) -> (Tensor, Tensor, Tensor)"
)
_BWD_SCHEMA = (
    "(Tensor? grad_spikes, Tensor h, Tensor? grad_v, Tensor? tau_t, float tau, Tensor? thresh_t, float thresh, "
    "Tensor? v0, " + _OPTIONS + ", bool need_tau, bool need_thresh, bool need_v0, ScalarType grad_dtype, "
    "bool time_major) -> (Tensor, Tensor, Tensor, Tensor)"
)

# name -> (forward OpOverload, backward OpOverload, the Library that holds them)
OPS: dict[str, tuple] = {}
# Plain eager calls skip the dispatcher (see _plain_eager); False sends every call through the op.
EAGER_FAST_PATH = True


@functools.lru_cache(maxsize=None)
def _spec(reset: str, v_reset: float, detach_reset: bool, surrogate: str, alpha) -> LIFSpec:
    return LIFSpec(reset, v_reset, detach_reset, surrogate, alpha)


def _options(spec: LIFSpec) -> tuple:
    return spec.reset, spec.v_reset, spec.detach_reset, spec.surrogate, spec.alpha


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


def _empty(like: torch.Tensor) -> torch.Tensor:
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
    def fwd_impl(x, tau_t, tau, thresh_t, thresh, v0, reset, v_reset, detach_reset, surrogate, alpha,
                 save_h, return_v, time_major):
        spec = _spec(reset, v_reset, detach_reset, surrogate, alpha)
        spikes, h, v = forward(x, _join(tau_t, tau), _join(thresh_t, thresh), spec, v0, save_h, return_v, time_major)
        inputs = (x, tau_t, thresh_t, v0)
        spikes = _conform(spikes, inputs, time_major)
        h = _conform(h, inputs, time_major) if save_h else _empty(x)
        v = _conform(v, inputs, None) if return_v else _empty(x)
        return spikes, h, v

    def fwd_fake(x, tau_t, tau, thresh_t, thresh, v0, reset, v_reset, detach_reset, surrogate, alpha,
                 save_h, return_v, time_major):
        spec = _spec(reset, v_reset, detach_reset, surrogate, alpha)
        spikes = empty_like_input(x, time_major)
        h = empty_like_input(x, time_major, h_dtype(x.dtype, spec)) if save_h else _empty(x)
        step = (x.shape[0], *x.shape[2:])
        v = x.new_empty(step, dtype=v_dtype or x.dtype) if return_v else _empty(x)
        return spikes, h, v

    torch.library.define(fwd_name, _FWD_SCHEMA, lib=lib)
    torch.library.impl(fwd_name, "default", fwd_impl, lib=lib)
    torch.library.register_fake(fwd_name, fwd_fake, lib=lib)

    # ---- backward ------------------------------------------------------------------------------------
    def bwd_impl(grad_spikes, h, grad_v, tau_t, tau, thresh_t, thresh, v0, reset, v_reset, detach_reset, surrogate,
                 alpha, need_tau, need_thresh, need_v0, grad_dtype, time_major):
        spec = _spec(reset, v_reset, detach_reset, surrogate, alpha)
        g_x, g_tau, g_thresh, g_v0 = backward(
            grad_spikes, h, _join(tau_t, tau), _join(thresh_t, thresh), spec, grad_v, v0,
            need_tau, need_thresh, need_v0, grad_dtype, time_major,
        )
        inputs = (grad_spikes, h, grad_v, tau_t, thresh_t, v0)
        return (
            _conform(g_x, inputs, time_major),
            _conform(g_tau, inputs, None) if need_tau else _empty(h),
            _conform(g_thresh, inputs, None) if need_thresh else _empty(h),
            _conform(g_v0, inputs, None) if need_v0 else _empty(h),
        )

    def bwd_fake(grad_spikes, h, grad_v, tau_t, tau, thresh_t, thresh, v0, reset, v_reset, detach_reset, surrogate,
                 alpha, need_tau, need_thresh, need_v0, grad_dtype, time_major):
        return (
            empty_like_input(h, time_major, grad_dtype),
            tau_t.new_empty(tau_t.shape) if need_tau else _empty(h),
            thresh_t.new_empty(thresh_t.shape) if need_thresh else _empty(h),
            v0.new_empty(v0.shape) if need_v0 else _empty(h),
        )

    torch.library.define(bwd_name, _BWD_SCHEMA, lib=lib)
    torch.library.impl(bwd_name, "default", bwd_impl, lib=lib)
    torch.library.register_fake(bwd_name, bwd_fake, lib=lib)

    fwd_op = getattr(getattr(torch.ops, NAMESPACE), f"lif_fwd_{name}").default
    bwd_op = getattr(getattr(torch.ops, NAMESPACE), f"lif_bwd_{name}").default

    # ---- autograd ------------------------------------------------------------------------------------
    def setup_context(ctx, inputs, output):
        x, tau_t, tau, thresh_t, thresh, v0, *options = inputs[:11]
        ctx.set_materialize_grads(False)  # an unused final potential must not become a 0 * inf carry
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(x if saves_input else output[1], tau_t, thresh_t, v0)
        ctx.lif = (tau, thresh, tuple(options), x.dtype, inputs[13])

    def backward_formula(ctx, grad_spikes, _grad_h, grad_v, bwd=bwd_op):
        h, tau_t, thresh_t, v0 = ctx.saved_tensors
        tau, thresh, options, x_dtype, time_major = ctx.lif
        needs = ctx.needs_input_grad
        if grad_spikes is None and grad_v is None:
            return (None,) * 14
        need_tau, need_thresh, need_v0 = needs[1], needs[3], needs[5]
        g_x, g_tau, g_thresh, g_v0 = bwd(
            grad_spikes, h, grad_v, tau_t, tau, thresh_t, thresh, v0, *options,
            need_tau, need_thresh, need_v0, x_dtype, time_major,
        )
        return (g_x, g_tau if need_tau else None, None, g_thresh if need_thresh else None, None,
                g_v0 if need_v0 else None, *(None,) * 8)

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
            return backward_formula(ctx, grad_spikes, grad_h, grad_v, bwd=bwd_impl)

    # ---- vmap: the vmapped dimension joins the neuron dimensions -------------------------------------
    def fwd_vmap(info, in_dims, x, tau_t, tau, thresh_t, thresh, v0, *rest):
        size = info.batch_size
        x_dim, tau_dim, thresh_dim, v0_dim = in_dims[0], in_dims[1], in_dims[3], in_dims[5]
        neuron_rank = x.dim() - (0 if x_dim is None else 1) - 2
        x = _vmapped_into_neurons(x, x_dim, size, lead=2)
        tau_t = _param_with_vmapped(tau_t, tau_dim, size, neuron_rank)
        thresh_t = _param_with_vmapped(thresh_t, thresh_dim, size, neuron_rank)
        v0 = None if v0 is None else _vmapped_into_neurons(v0, v0_dim, size, lead=1)
        spikes, h, v = fwd_op(x, tau_t, tau, thresh_t, thresh, v0, *rest)
        save_h, return_v = rest[5], rest[6]
        return (
            (_neurons_to_front(spikes, 2), _neurons_to_front(h, 2) if save_h else h,
             _neurons_to_front(v, 1) if return_v else v),
            (0, 0 if save_h else None, 0 if return_v else None),
        )

    def bwd_vmap(info, in_dims, grad_spikes, h, grad_v, tau_t, tau, thresh_t, thresh, v0, *rest):
        size = info.batch_size
        gs_dim, h_dim, gv_dim, tau_dim, thresh_dim, v0_dim = (in_dims[i] for i in (0, 1, 2, 3, 5, 7))
        neuron_rank = h.dim() - (0 if h_dim is None else 1) - 2
        tau_shape = None if tau_t is None else tau_t.shape[(0 if tau_dim is None else 1):]
        thresh_shape = None if thresh_t is None else thresh_t.shape[(0 if thresh_dim is None else 1):]
        h = _vmapped_into_neurons(h, h_dim, size, lead=2)
        grad_spikes = None if grad_spikes is None else _vmapped_into_neurons(grad_spikes, gs_dim, size, lead=2)
        grad_v = None if grad_v is None else _vmapped_into_neurons(grad_v, gv_dim, size, lead=1)
        tau_t = _param_with_vmapped(tau_t, tau_dim, size, neuron_rank)
        thresh_t = _param_with_vmapped(thresh_t, thresh_dim, size, neuron_rank)
        v0 = None if v0 is None else _vmapped_into_neurons(v0, v0_dim, size, lead=1)
        g_x, g_tau, g_thresh, g_v0 = bwd_op(grad_spikes, h, grad_v, tau_t, tau, thresh_t, thresh, v0, *rest)
        need_tau, need_thresh, need_v0 = rest[5], rest[6], rest[7]
        return (
            (_neurons_to_front(g_x, 2),
             g_tau.reshape(size, *tau_shape) if need_tau else g_tau,
             g_thresh.reshape(size, *thresh_shape) if need_thresh else g_thresh,
             _neurons_to_front(g_v0, 1) if need_v0 else g_v0),
            (0, 0 if need_tau else None, 0 if need_thresh else None, 0 if need_v0 else None),
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
        grad = torch.is_grad_enabled() and (
            x.requires_grad or (tau_t is not None and tau_t.requires_grad)
            or (thresh_t is not None and thresh_t.requires_grad) or (v0 is not None and v0.requires_grad))
        save_h = return_h or (grad and not saves_input)
        args = (x, tau_t, tau_f, thresh_t, thresh_f, v0, *_options(spec), save_h, return_v, time_major)
        if EAGER_FAST_PATH and _plain_eager(x, tau_t, thresh_t, v0):
            spikes, h, v = EagerFunction.apply(*args) if grad or save_h else fwd_impl(*args)
        else:
            spikes, h, v = fwd_op(*args)
        return spikes, (v if return_v else None), (h.to(x.dtype) if return_h else None)

    core.__name__ = f"lif_core_{name}"
    return core


def _plain_eager(*tensors) -> bool:
    """True when nothing but eager autograd would see the op: no compiler, tracer, transform, mode or subclass.

    Then :func:`register_lif_ops`' core calls the op's own kernels and autograd formula through an
    ``autograd.Function``, skipping the dispatcher's two round trips into Python (forward: the
    autograd kernel and the implementation; ``benchmarks/op_overhead.py`` measures what that
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
torch.library.define(f"{NAMESPACE}::surrogate_spike", "(Tensor z, str surrogate, float? alpha) -> Tensor",
                     lib=_surrogate_lib)


def _surrogate_spike_impl(z, surrogate, alpha):
    return (z > 0).to(z.dtype)


def _surrogate_spike_setup(ctx, inputs, output):
    z, surrogate, alpha = inputs
    ctx.save_for_backward(z, output)
    ctx.spec = _spec("hard", 0.0, False, surrogate, alpha)


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
