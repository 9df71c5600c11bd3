"""The fused kernels, imported as ``snn.kernels`` (see snn/__init__.py): one folder per op, today
``lif/``. Importing this package imports no kernel: the Triton one (which picks the Triton
interpreter when there is no GPU, :mod:`snn.kernels.lif.triton_launch`) loads on first use of the
names below, and the C one (:mod:`snn.kernels.lif.cpu_launch`) when the torch backend needs it."""

__all__ = ["INTERPRETED", "lif_backward", "lif_forward", "lif_triton"]


def __getattr__(name: str):
    if name in __all__:
        from .lif import triton_launch

        return getattr(triton_launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
