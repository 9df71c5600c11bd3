"""The LIF neuron, one file per job (the fused kernels are in ``snn.kernels.lif``):

- :mod:`snn.lif.spec`       the options, their defaults, the surrogate table, the one derivation
- :mod:`snn.lif.reference`  the seed's loop in plain PyTorch: the definition the others are proven against
- :mod:`snn.lif.eager`      the eager implementation with a hand-written backward (any device, fp64)
- :mod:`snn.lif.ops`        the ``torch.library`` registration that makes each implementation one op
- :mod:`snn.lif.backends`   the ``--backend`` names and what each supports
- :mod:`snn.lif.layers`     the functional and module API (``lif_spike``, ``LIFSpike``, ``LeakyReadout``)
- :mod:`snn.lif.pool`       a LIF layer and the 2x2 max-pooling after it, fused on the CPU where it can be

Importing this package imports none of them (importing the spec registers no op).
"""
