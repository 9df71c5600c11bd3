"""Exhaustive proof that the 16-bit save of ``kernels.lif.triton_kernels._round_to_side`` is bit-identical to the
rule it replaced, over all 2**32 fp32 bit patterns of ``h``, on the CPU.

The replaced rule (the kernel before issue 8), ported operation for operation to torch integer and
float ops: round ``h`` to nearest even in the 16-bit dtype; a finite ``h`` that rounds to inf
steps one code toward zero (saturation); if the result lies on the other side of ``thresh`` than
``h`` (``(q - thresh > 0) != (h - thresh > 0)``, fp32), step one code toward ``h``'s side on the
sign-magnitude bit pattern (-0 counted as +0). The new rule (see ``_round_to_side``): clamp ``h``
to the interval of its side (``kernels.lif.triton_bounds._side_bounds``), keep +-inf and NaN, round to nearest
even. Both are compared as int16 bit patterns; a NaN ``h`` must give a NaN in both.

The new rule's final conversion is exact either way; its two implementations (the hardware's
``cvt.rn`` under ``HW_CVT``, and the hand-written bf16 round-to-nearest-even the interpreter uses)
are proven equal here too: the hand-written bf16 formula against ``torch``'s fp32 -> bf16 (round to
nearest even, the same rounding as ``cvt.rn.bf16.f32``) on every non-NaN fp32 value.

    python -m tests.proofs.prove_round_to_side                      # thresh 1.0, bf16 and fp16
    python -m tests.proofs.prove_round_to_side --thresh=1.0,0.3,-2.5,65510,0 --dtype bf16 fp16
    python -m tests.proofs.prove_round_to_side --sample 1000000     # random sample (what CI runs)
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from snn.kernels.lif.triton_bounds import _side_bounds

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def old_rule(h: torch.Tensor, thresh: float, dtype: torch.dtype) -> torch.Tensor:
    """The pre-issue-8 kernel's ``_round_to_side``, step by step, as int16 bit patterns."""
    t = torch.tensor(thresh, dtype=torch.float32)
    spike = (h - t) > 0
    q = h.to(dtype)
    bits = q.view(torch.int16).to(torch.int32)
    overflow = q.float().abs().eq(math.inf) & h.abs().lt(math.inf)
    bits = torch.where(overflow, bits - 1, bits)
    qf = bits.to(torch.int16).view(dtype).float()
    wrong = ((qf - t) > 0) != spike
    mag = torch.where(qf == 0, 0, bits)
    up = torch.where(mag >= 0, mag + 1, mag - 1)
    down = torch.where(mag > 0, mag - 1, torch.where(mag == 0, -32767, mag + 1))
    bits = torch.where(wrong, torch.where(spike, up, down), bits)
    return bits.to(torch.int16)


def new_rule(h: torch.Tensor, thresh: float, dtype: torch.dtype, bounds=None) -> torch.Tensor:
    """The issue-8 ``_round_to_side``: clamp to the side's interval, then round to nearest even."""
    t = torch.tensor(thresh, dtype=torch.float32)
    lo_fire, hi_fire, lo_rest, hi_rest = bounds or _side_bounds(thresh, dtype)
    fired = (h - t) > 0
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    lo = torch.where(fired, f32(lo_fire), f32(lo_rest))
    hi = torch.where(fired, f32(hi_fire), f32(hi_rest))
    hc = torch.minimum(torch.maximum(h, lo), hi)  # h is finite wherever the result is used
    hc = torch.where(h.abs() < math.inf, hc, h)
    return hc.to(dtype).view(torch.int16)


def manual_bf16(h: torch.Tensor) -> torch.Tensor:
    """``kernels.lif._from_fp32``'s hand-written bf16 round-to-nearest-even (the interpreter path)."""
    u = h.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    u = torch.where(h != h, 0x7FC0, u)
    return (u & 0xFFFF).to(torch.int32).to(torch.int16)


def check_chunk(h: torch.Tensor, thresh: float, dtype: torch.dtype, bounds) -> tuple[int, torch.Tensor]:
    a, b = old_rule(h, thresh, dtype), new_rule(h, thresh, dtype, bounds)
    nan = h.isnan()
    bad = torch.where(nan, ~(a.view(dtype).isnan() & b.view(dtype).isnan()), a != b)
    side = (b.view(dtype).float() - thresh > 0) != ((h - thresh) > 0)
    bad |= side & ~nan  # and the guarantee itself, directly
    return int(bad.sum()), h[bad][:5]


def run(thresholds, dtypes, chunk_bits: int = 24, sample: int | None = None, seed: int = 0) -> int:
    failures = 0
    gen = torch.Generator().manual_seed(seed)
    for name in dtypes:
        dtype = DTYPES[name]
        for thresh in thresholds:
            t0 = time.perf_counter()
            bounds = _side_bounds(thresh, dtype)
            bad_total, examples, n = 0, [], 0
            if sample:
                chunks = [torch.randint(-(2**31), 2**31, (sample,), generator=gen, dtype=torch.int64).to(torch.int32)]
            else:
                step = 1 << chunk_bits
                chunks = (torch.arange(start, start + step, dtype=torch.int64).to(torch.int32) for start in range(-(2**31), 2**31, step))
            for bits in chunks:
                h = bits.view(torch.float32)
                bad, ex = check_chunk(h, thresh, dtype, bounds)
                bad_total += bad
                examples += ex.tolist()
                if name == "bf16" and thresh == thresholds[0]:  # interpreter path == hardware rounding
                    ok = h == h
                    man = manual_bf16(h)[ok]
                    hw = h[ok].to(torch.bfloat16).view(torch.int16)
                    mism = int((man != hw).sum())
                    bad_total += mism
                n += h.numel()
            dt = time.perf_counter() - t0
            print(f"{name} thresh={thresh!r}: {n} values ({'sample' if sample else 'all 2**32'}), "
                  f"{bad_total} mismatches, {dt:.1f} s" + (f", e.g. h={examples[:5]}" if bad_total else ""), flush=True)
            failures += bad_total
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--thresh", default="1.0", help="comma-separated thresholds (default 1.0)")
    ap.add_argument("--dtype", nargs="+", default=["bf16", "fp16"], choices=sorted(DTYPES))
    ap.add_argument("--sample", type=int, default=None, help="check this many random bit patterns instead of all")
    ap.add_argument("--chunk-bits", type=int, default=24)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    failures = run([float(v) for v in a.thresh.split(",")], a.dtype, a.chunk_bits, a.sample)
    print(f"total: {failures} mismatches in {time.perf_counter() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
