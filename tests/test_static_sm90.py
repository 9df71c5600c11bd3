"""The kernels as an H200 runs them, checked without a GPU (tests/proofs/static_sm90.py).

Both kernels are compiled for sm_90 through Triton's launch-time binder, with the launcher's own
arguments, tiles and compile options, for every benchmark configuration; the cubin is read back
with the wheel's cuobjdump. Compiled once per session in one child process (the kernels in this
process were decorated for the interpreter). Budgets per configuration live in
``static_sm90_budgets.json`` beside this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.proofs import static_sm90 as S

BUDGETS = json.loads((Path(__file__).with_name("static_sm90_budgets.json")).read_text())
ALIGNED = [c.name for c in S.DEFAULT_CONFIGS if c.layout != "unaligned" and c.N % 16 == 0]


@pytest.fixture(scope="session")
def records():
    try:
        recs = S.analyse(S.DEFAULT_CONFIGS)
    except (RuntimeError, FileNotFoundError) as exc:
        if "ptxas" in str(exc) or "cuobjdump" in str(exc) or "ImportError" in str(exc):
            pytest.skip(f"this Triton cannot compile for sm_90 here: {exc}")
        raise
    return {r["name"]: r for r in recs}


def test_every_configuration_has_a_budget():
    assert set(BUDGETS) - {"_doc"} == {c.name for c in S.DEFAULT_CONFIGS}


def test_no_fma_anywhere(records):
    for name, r in records.items():
        assert (r["ptx_fma"], r["sass_fma"]) == (0, 0), f"{name}: FMA in the compiled kernel (PTX {r['ptx_fma']}, SASS {r['sass_fma']})"


def test_fma_check_can_fail():
    """With contraction allowed the same kernels do contain FMAs: the check above is not vacuous."""
    recs = S.analyse([S.BY_NAME["fwd-fp32-large"], S.BY_NAME["bwd-fp32-large"]], fp_fusion=True)
    for r in recs:
        assert r["ptx_fma"] > 0 and r["sass_fma"] > 0, f"{r['name']}: no FMA even with fusion allowed"


def test_no_spills(records):
    for name, r in records.items():
        assert r["local_bytes"] == 0 and r["spill_insns"] == 0, f"{name}: spills ({r['local_bytes']} B local, {r['spill_insns']} LDL/STL)"


@pytest.mark.parametrize("name", ALIGNED)
def test_128_bit_global_accesses_when_aligned(records, name):
    r = records[name]
    if not r["load_bits"]:  # stride-0 input: no load left in the loop at all
        assert r["layout"] == "stride0", f"{name}: no load in the loop"
    else:
        assert r["load_bits"] == [128], f"{name}: loop loads {r['loop_loads']}"
    assert r["store_bits"] == [128], f"{name}: loop stores {r['loop_stores']}"


@pytest.mark.parametrize("name", sorted(set(BUDGETS) - {"_doc"}))
def test_instruction_budget(records, name):
    r = records[name]
    assert r["insns_per_elem_step"] is not None, f"{name}: no time loop found in the SASS"
    assert r["insns_per_elem_step"] <= BUDGETS[name], (
        f"{name}: {r['insns_per_elem_step']} SASS instructions per element-step > budget {BUDGETS[name]}"
    )


def test_loads_in_flight_during_stores(records):
    """The next step's loads are issued before this step's stores (no wait on them first).

    For the seed's neuron and the soft reset. The sigmoid surrogate's IEEE division and the
    learnable parameters' reductions change ptxas's schedule (1 of 4 backward loads in flight);
    their rows in the report show it, and their speed is for a GPU run to judge.
    """
    for name, r in records.items():
        if r["load_bits"] and r["layout"] == "contiguous" and r["N"] % 16 == 0 and r["neuron"] in ("seed", "soft"):
            loads = sum(int(part.split("x")[0]) for part in r["loop_loads"].split())
            assert r["loads_in_flight_at_store"] == loads, f"{name}: {r['loads_in_flight_at_store']} of {loads} loads in flight"


def test_stride0_input_is_not_reloaded(records):
    for name, r in records.items():
        if r["layout"] == "stride0":
            assert r["loop_loads"] == "-", f"{name}: x reloaded every step ({r['loop_loads']})"


def test_launch_specialisations_reach_the_compiler(records):
    """The compile is the launch's: unit strides are constants, the rest divisible by 16."""
    r = records["fwd-fp32-large"]
    assert {"stride_xn=1", "stride_sn=1", "stride_hn=1", "x_ptr:D", "N:D"} <= set(r["specialised"]), r["specialised"]
    assert "T:D" not in r["specialised"], "T must stay unspecialised (do_not_specialize)"


@pytest.mark.slow
def test_extra_sweep_keeps_the_invariants():
    for r in S.analyse(S.EXTRA_CONFIGS):
        assert (r["ptx_fma"], r["sass_fma"], r["local_bytes"], r["spill_insns"]) == (0, 0, 0, 0), r["name"]
        if r["layout"] == "contiguous" and r["N"] % 16 == 0:
            assert r["load_bits"] == [128] and r["store_bits"] == [128], r["name"]


def test_round_to_side_matches_the_replaced_rule_sampled():
    """CI's sample of tests/proofs/prove_round_to_side.py (whose full run covers all 2**32 values)."""
    from tests.proofs.prove_round_to_side import run

    thresholds = [1.0, 0.0, -0.0, 0.3, -2.5, 65510.0, 3.3e38, 3.4e38, 1e-42, -1e-9, float("inf"), float("nan")]
    assert run(thresholds, ["bf16", "fp16"], sample=100_000) == 0
