"""Static analysis of the LIF kernels as compiled for an H200 (sm_90), without a GPU: a proof, not a benchmark.

Each configuration is compiled the way a real launch compiles it: the launcher's own argument
builders (``kernels.lif.triton_launch._fwd_launch`` / ``_bwd_launch``) and tile choice (``_launch_config``) give
the arguments, and Triton's launch-time binder (``create_function_from_signature`` over the
kernel's parameters, the same one ``JITFunction.run`` uses) specialises them: integer arguments
equal to 1 become constants, integers divisible by 16 and 16-byte-aligned pointers get
``tt.divisibility=16``. The resulting ``ASTSource`` goes through ``triton.compile`` for
``GPUTarget("cuda", 90, 32)`` with the launcher's compile options, and the cubin is read back with
``cuobjdump`` (the wheel ships it). Tensors are stand-ins with a ``dtype``, strides and a
``data_ptr`` (16-byte aligned unless the configuration is an unaligned view): nothing is allocated,
so the large shape costs nothing.

Per configuration it reports: registers, spills (local memory, ``LDL``/``STL``), the vector width
of every global load and store in the time loop, FMA count (``fma`` in PTX, ``FFMA``/``DFMA``/real
``HFMA2`` in SASS, whole kernel), SASS instructions per element-step in the loop (loop body over
the elements each thread owns), loads still in flight when the step's first store issues (the
register prefetch), and occupancy (CTAs per SM from registers and warps; no shared memory used).

Usage::

    python -m tests.proofs.static_sm90            # Markdown table of the default configurations
    python -m tests.proofs.static_sm90 --json     # the records as JSON
    python -m tests.proofs.static_sm90 --all      # also the larger sweep (tests mark it slow)

Importable: :func:`analyse` returns one record per configuration. In a process whose
``kernels.lif.triton_kernels`` were decorated for the interpreter (no CUDA), it runs the compile in a child
process with ``TRITON_INTERPRET=0`` and reads the JSON back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# sm_90 (H100/H200) limits for the occupancy estimate.
SM90_REGS_PER_SM = 65536
SM90_MAX_WARPS_PER_SM = 64
SM90_MAX_CTAS_PER_SM = 32
SM90_REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256


@dataclass(frozen=True)
class Config:
    """One launch to compile: kernel direction, dtype, shape and the layout of the input."""

    name: str
    kind: str  # "fwd" or "bwd"
    dtype: str  # "fp32", "bf16", "fp16"
    B: int
    T: int
    N: int
    save_h: bool = True  # forward only
    layout: str = "contiguous"  # "contiguous", "stride0" (x broadcast over time), "unaligned" (offset view)
    neuron: str = "seed"  # "seed", "soft" (soft reset), "sigmoid"/"atan"/"rectangle" (surrogate), "learn" (per-neuron learnable tau and thresh)


def _configs() -> tuple[list[Config], list[Config]]:
    """(default set, extra sweep). The default set is what CI compiles and RESULTS.md shows."""
    default, extra = [], []
    mnist_b = (128, 1024, 8192)
    for dt in ("fp32", "bf16", "fp16"):
        default.append(Config(f"fwd-{dt}-mnist-b1024", "fwd", dt, 1024, 6, 512))
        default.append(Config(f"fwd-{dt}-large", "fwd", dt, 256, 16, 65536))
        default.append(Config(f"fwd-nosave-{dt}-large", "fwd", dt, 256, 16, 65536, save_h=False))
        default.append(Config(f"fwd-stride0-{dt}-mnist-b1024", "fwd", dt, 1024, 6, 512, layout="stride0"))
        default.append(Config(f"bwd-{dt}-mnist-b1024", "bwd", dt, 1024, 6, 512))
        default.append(Config(f"bwd-{dt}-large", "bwd", dt, 256, 16, 65536))
        default.append(Config(f"fwd-{dt}-oddN", "fwd", dt, 1024, 6, 1001))
        default.append(Config(f"fwd-{dt}-unaligned", "fwd", dt, 1024, 6, 512, layout="unaligned"))
        for b in mnist_b:
            if b != 1024:
                extra.append(Config(f"fwd-{dt}-mnist-b{b}", "fwd", dt, b, 6, 512))
                extra.append(Config(f"bwd-{dt}-mnist-b{b}", "bwd", dt, b, 6, 512))
        extra.append(Config(f"fwd-nosave-{dt}-mnist-b1024", "fwd", dt, 1024, 6, 512, save_h=False))
        extra.append(Config(f"bwd-{dt}-oddN", "bwd", dt, 1024, 6, 1001))
        extra.append(Config(f"bwd-{dt}-unaligned", "bwd", dt, 1024, 6, 512, layout="unaligned"))
    # The neuron options (snn/lif/spec.py) at the large shape: what each one costs beside the seed's neuron.
    for dt in ("fp32", "bf16"):
        default.append(Config(f"fwd-soft-{dt}-large", "fwd", dt, 256, 16, 65536, neuron="soft"))
        default.append(Config(f"bwd-soft-{dt}-large", "bwd", dt, 256, 16, 65536, neuron="soft"))
        default.append(Config(f"bwd-sigmoid-{dt}-large", "bwd", dt, 256, 16, 65536, neuron="sigmoid"))
        default.append(Config(f"fwd-learn-{dt}-large", "fwd", dt, 256, 16, 65536, neuron="learn"))
        default.append(Config(f"bwd-learn-{dt}-large", "bwd", dt, 256, 16, 65536, neuron="learn"))
        extra.append(Config(f"bwd-atan-{dt}-large", "bwd", dt, 256, 16, 65536, neuron="atan"))
        extra.append(Config(f"bwd-rectangle-{dt}-large", "bwd", dt, 256, 16, 65536, neuron="rectangle"))
    return default, extra


DEFAULT_CONFIGS, EXTRA_CONFIGS = _configs()
ALL_CONFIGS = DEFAULT_CONFIGS + EXTRA_CONFIGS
BY_NAME = {c.name: c for c in ALL_CONFIGS}


# ----------------------------------------------------------------------------------------------
# compile (in a process where kernels.lif.triton_kernels holds real JITFunctions)
# ----------------------------------------------------------------------------------------------


class _FakeTensor:
    """What Triton's binder reads from a tensor argument: dtype, data_ptr (alignment) and strides."""

    def __init__(self, dtype, shape, strides, byte_offset=0):
        self.dtype = dtype
        self.shape = shape
        self._strides = tuple(strides)
        self._ptr = 1 << 20 | byte_offset  # 16-byte aligned base, plus the view's offset

    def data_ptr(self):
        return self._ptr

    def stride(self, dim=None):
        return self._strides if dim is None else self._strides[dim]


def _views(cfg: Config):
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.dtype]
    B, T, N = cfg.B, cfg.T, cfg.N
    esize = torch.tensor([], dtype=dtype).element_size()
    contiguous = (T * N, N, 1)
    if cfg.layout == "contiguous":
        x = _FakeTensor(dtype, (B, T, N), contiguous)
    elif cfg.layout == "stride0":  # base[B, N].unsqueeze(1).expand(B, T, N)
        x = _FakeTensor(dtype, (B, T, N), (N, 0, 1))
    elif cfg.layout == "unaligned":  # storage[1:].view(B, T, N): an offset of one element
        x = _FakeTensor(dtype, (B, T, N), contiguous, byte_offset=esize)
    else:
        raise ValueError(cfg.layout)
    h_dtype = dtype
    out = _FakeTensor(dtype, (B, T, N), contiguous)
    h = _FakeTensor(h_dtype, (B, T, N), contiguous)
    return dtype, x, out, h


def _launch_of(cfg: Config):
    import torch

    import snn.kernels.lif.triton_launch as L
    from snn.lif.spec import LIFSpec

    dtype, x, out, h = _views(cfg)
    spec = {"soft": LIFSpec(reset="soft")}.get(cfg.neuron, LIFSpec(surrogate=cfg.neuron) if cfg.neuron in ("sigmoid", "atan", "rectangle") else LIFSpec())
    if spec.surrogate == "rectangle" and dtype != torch.float32:  # it saves h in fp32 (kernels.lif.triton_launch.saved_h_dtype)
        h = _FakeTensor(torch.float32, h.shape, h.stride())
    learn = cfg.neuron == "learn"
    row = _FakeTensor(torch.float32, (cfg.N,), (1,)) if learn else None  # per-neuron tau / thresh
    if cfg.kind == "fwd":
        bounds = _FakeTensor(torch.float32, (4, cfg.N), (cfg.N, 1)) if learn and dtype != torch.float32 else None
        kernel, args, constexprs = L._fwd_launch(x, out, h if cfg.save_h else out, cfg.B, cfg.T, cfg.N, 0.5, 1.0, cfg.save_h,
                                                 spec, tau_vec=row, thresh_vec=row, bounds=bounds)
    else:  # x stands in for the incoming gradient (its layout), h is the saved potential
        rows = _FakeTensor(torch.float32, (cfg.B, cfg.N), (cfg.N, 1)) if learn else None  # partial sums
        kernel, args, constexprs = L._bwd_launch(x, h, out, cfg.B, cfg.T, cfg.N, 0.5, 1.0, spec=spec,
                                                 tau_vec=row, thresh_vec=row, grad_tau=rows, grad_thresh=rows)
    grid, kwargs = L._launch_config(cfg.B, cfg.N, constexprs)
    return kernel, args, kwargs


def compile_config(cfg: Config, keep_asm: bool = False, fp_fusion: bool | None = None) -> dict:
    """Compile one configuration for sm_90 through the launch binder; return its metrics."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    kernel, args, kwargs = _launch_of(cfg)
    if fp_fusion is not None:  # only to prove the FMA check can fail
        kwargs["enable_fp_fusion"] = fp_fusion
    if not isinstance(kernel, JITFunction):
        raise RuntimeError("kernels.lif.triton_kernels were decorated for the interpreter; use analyse(), which compiles in a child process")
    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    src = ASTSource(kernel, signature, constexprs, attrs)
    compiled = triton.compile(src, target=target, options=options.__dict__)
    ptx, cubin = compiled.asm["ptx"], compiled.asm["cubin"]
    block_b, block_n, num_warps = kwargs["BLOCK_B"], kwargs["BLOCK_N"], kwargs["num_warps"]
    elems = block_b * block_n // (32 * num_warps)
    record = dict(asdict(cfg), block=f"{block_b}x{block_n}", num_warps=num_warps, elems_per_thread=elems)
    # what the binder specialised: "D" = divisibility 16, "=1" = the constant 1
    record["specialised"] = sorted(
        f"{k}:{v[1]}" if v[0] != "constexpr" else f"{k}=1"
        for k, v in zip(kernel.arg_names, specialization)
        if (v[0] != "constexpr" and v[1]) or (v[0] == "constexpr" and k not in kwargs)
    )
    record.update(_analyse_binary(ptx, cubin, elems, num_warps))
    if keep_asm:
        record["ptx"] = ptx
        record["sass"] = _sass(cubin)
    return record


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _sass(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True, check=True).stdout


def _resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {k.lower(): int(v) for k, v in found.items()}


_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_WIDTH = {"128": 128, "64": 64, "U16": 16, "S16": 16, "U8": 8, "S8": 8}


def _parse_sass(sass: str) -> list[tuple[int, str]]:
    return [(int(a, 16), text) for a, text in _INSN.findall(sass)]


def _opcode(text: str) -> str:
    text = re.sub(r"^@!?U?P[T0-9]+\s+", "", text)
    return text.split()[0]


def _dest_regs(text: str) -> set[int]:
    """Registers an LDG writes (vector loads write consecutive registers)."""
    op = _opcode(text)
    m = re.search(r"\bR(\d+)\b", text.split(None, 2 if text.startswith("@") else 1)[-1])
    if not m:
        return set()
    width = next((w for suf, w in _WIDTH.items() if f".{suf}" in op), 32)
    return set(range(int(m.group(1)), int(m.group(1)) + max(1, width // 32)))


def _src_regs(text: str) -> set[int]:
    body = text.split(None, 2 if text.startswith("@") else 1)[-1]
    parts = body.split(",", 1)
    srcs = parts[1] if len(parts) > 1 else ""
    if _opcode(text).startswith("ST"):  # a store reads its first operand too (the address)
        srcs = body
    regs = set()
    for m in re.finditer(r"\bR(\d+)(\.64)?\b", srcs):
        r = int(m.group(1))
        regs.update({r, r + 1} if m.group(2) else {r})
    return regs


def _access(text: str) -> str:
    op = _opcode(text)
    width = next((w for suf, w in _WIDTH.items() if f".{suf}" in op.split(".")[1:] or op.endswith("." + suf)), 32)
    return f"{op.split('.')[0]}.{width}"


def _analyse_binary(ptx: str, cubin: bytes, elems: int, num_warps: int) -> dict:
    sass = _sass(cubin)
    insns = [(a, t) for a, t in _parse_sass(sass) if _opcode(t) != "NOP"]
    res = _resources(cubin)
    # the time loop: the innermost backward branch
    loops = []
    for a, t in insns:
        m = re.match(r"(?:@!?P\d+\s+)?BRA\s+(?:`\(\.L_x_\d+\)\s*)?(0x[0-9a-f]+)", t)
        if m and int(m.group(1), 16) < a:  # (a branch to itself is the trap after EXIT)
            loops.append((int(m.group(1), 16), a))
    body = []
    if loops:
        start, end = min(loops, key=lambda se: se[1] - se[0])
        body = [t for a, t in insns if start <= a <= end]
    loads = [t for t in body if _opcode(t).startswith("LDG")]
    stores = [t for t in body if _opcode(t).startswith("STG")]
    # loads in flight when the first store of the step issues (a register prefetch keeps them all)
    in_flight = 0
    first_st = next((i for i, t in enumerate(body) if _opcode(t).startswith("STG")), None)
    if first_st is not None:
        for i, t in enumerate(body[:first_st]):
            if _opcode(t).startswith("LDG"):
                dest = _dest_regs(t)
                used = any(dest & _src_regs(u) for u in body[i + 1 : first_st + 1])
                in_flight += not used
    all_ops = [_opcode(t) for _, t in insns]
    hfma = sum(1 for _, t in insns if _opcode(t).startswith("HFMA2") and "-RZ, RZ" not in t)
    regs = res.get("reg", 0)
    per_warp = math.ceil(regs * 32 / SM90_REG_ALLOC_UNIT) * SM90_REG_ALLOC_UNIT
    ctas = min(SM90_MAX_CTAS_PER_SM, SM90_MAX_WARPS_PER_SM // num_warps, (SM90_REGS_PER_SM // max(per_warp, 1)) // num_warps)

    def widths(ts):
        counts = {}
        for t in ts:
            k = _access(t)
            counts[k] = counts.get(k, 0) + 1
        return " ".join(f"{n}x{k.split('.')[1]}" for k, n in sorted(counts.items())) or "-"

    return dict(
        regs=regs,
        local_bytes=res.get("local", 0),
        stack_bytes=res.get("stack", 0),
        spill_insns=sum(op.startswith(("LDL", "STL")) for op in all_ops),
        ptx_fma=len(re.findall(r"\bfma\.", ptx)),
        sass_fma=sum(op.startswith(("FFMA", "DFMA")) for op in all_ops) + hfma,
        loop_insns=len(body),
        insns_per_elem_step=round(len(body) / elems, 2) if body else None,
        loop_loads=widths(loads),
        loop_stores=widths(stores),
        load_bits=sorted({int(_access(t).split(".")[1]) for t in loads}),
        store_bits=sorted({int(_access(t).split(".")[1]) for t in stores}),
        loads_in_flight_at_store=in_flight,
        ctas_per_sm=ctas,
    )


# ----------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------


def analyse(configs: list[Config] | None = None, fp_fusion: bool | None = None) -> list[dict]:
    """Records for ``configs`` (default: DEFAULT_CONFIGS), compiled in a child process if needed."""
    configs = DEFAULT_CONFIGS if configs is None else configs
    import snn.kernels.lif.triton_launch as L

    if not L.INTERPRETED:
        return [compile_config(c, fp_fusion=fp_fusion) for c in configs]
    env = dict(os.environ, TRITON_INTERPRET="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "tests.proofs.static_sm90", "--json", *[c.name for c in configs]]
        + (["--fp-fusion"] if fp_fusion else []),
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"static_sm90 child failed:\n{proc.stderr[-4000:]}")
    records = json.loads(proc.stdout)
    return records


COLUMNS = [
    ("config", lambda r: r["name"]),
    ("block x warps", lambda r: f"{r['block']} x{r['num_warps']}"),
    ("regs", lambda r: r["regs"]),
    ("spills", lambda r: r["local_bytes"] + r["spill_insns"]),
    ("loop loads", lambda r: r["loop_loads"]),
    ("loop stores", lambda r: r["loop_stores"]),
    ("FMA ptx/sass", lambda r: f"{r['ptx_fma']}/{r['sass_fma']}"),
    ("SASS/elem-step", lambda r: r["insns_per_elem_step"]),
    ("loads in flight at 1st store", lambda r: r["loads_in_flight_at_store"]),
    ("CTAs/SM", lambda r: r["ctas_per_sm"]),
]


def markdown(records: list[dict]) -> str:
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    for r in records:
        lines.append("| " + " | ".join(str(f(r)) for _, f in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="configuration names (default: the default set)")
    ap.add_argument("--json", action="store_true", help="print the records as JSON")
    ap.add_argument("--all", action="store_true", help="also the extra sweep")
    ap.add_argument("--fp-fusion", action="store_true", help="compile with FMA contraction allowed (a check of the check)")
    ap.add_argument("--asm", metavar="NAME", help="print the PTX and SASS of one configuration")
    a = ap.parse_args(argv)
    if a.asm:
        os.environ.setdefault("TRITON_INTERPRET", "0")
        r = compile_config(BY_NAME[a.asm], keep_asm=True)
        print(r.pop("ptx"))
        print(r.pop("sass"))
        print(json.dumps(r, indent=1))
        return 0
    configs = [BY_NAME[n] for n in a.names] if a.names else (ALL_CONFIGS if a.all else DEFAULT_CONFIGS)
    records = analyse(configs, fp_fusion=True if a.fp_fusion else None)
    print(json.dumps(records) if a.json else markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
