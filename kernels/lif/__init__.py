"""The LIF's fused kernels, one file per job: ``triton_launch`` (the Triton kernels and their
launchers, GPU or interpreter), ``cpu_launch`` (the C kernel ``lif_cpu.c``: build, cache, launch).

Importing this package imports neither Triton nor the C build: each backend imports its own module.
"""
