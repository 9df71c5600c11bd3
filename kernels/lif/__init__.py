"""The LIF's fused kernels, one file per job: ``triton_kernels`` (the Triton kernels),
``triton_launch`` (their launchers and registered operators, GPU or interpreter), ``triton_bounds``
(the 16-bit save's side bounds), ``triton_interpreter`` (the choice of Triton's CPU interpreter),
``cpu_launch`` (the C kernel ``lif_cpu.c``: build, cache, launch), ``cpu_pool`` (the same C file's LIF
fused with the 2x2 max-pooling after it, for the CSNN's conv blocks).

Importing this package imports neither Triton nor the C build: each backend imports its own module.
"""
