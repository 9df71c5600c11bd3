"""Markdown tables from the suite's records (printed at the end of ``pytest benchmarks``).

    python -m benchmarks.report results.json               # render a --benchmark-json file again
    python -m benchmarks.report results.json --gpu-check \\
        --stage "kernel tests=passed" --train-metrics ckpt/mnist.metrics.jsonl   # gpu_check.sh's table

Speedups are ``t(contender 1) / t`` and ``t(contender 3) / t`` on medians measured in the same run
(> 1 means faster). GB/s is the minimum byte count of ``benchmarks.common`` over the median; on a
GPU it is also given as a fraction of the copy bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import OrderedDict
from pathlib import Path

REF, COMPILE, OURS = "c1-index", "c3-compile", "c4-triton"
SJ_KEYS = ("c5-sj-triton", "c5-sj-cupy")
CONTENDER_ORDER = ("c1-index", "c2-unbind", "c3-compile", "c3b-torch-backend", "c3c-torch-fused", "c4-triton",
                   "c5-sj-triton", "c5-sj-cupy", "c5c-sj-compile")
FUSED_CPU, SJ_COMPILED = "c3c-torch-fused", "c5c-sj-compile"
CPU_COPY_FRACTION = 0.6  # issue 11: the fused CPU kernel at the large shape, by the byte count
MODE_NAME = {"fwd": "forward", "fwdbwd": "fwd+bwd"}
GPU_TODO = ("GPU figures: not measured in this run (no CUDA device): our Triton kernel's timings, GB/s against the copy "
            "bandwidth, SpikingJelly, peak memory and the largest batch in 8 GiB, and the train.py epoch time are "
            "still to be measured (benchmarks/gpu_check.sh).")


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return "-"


def fmt_x(ratio: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "-"
    if ratio < 10:
        return f"{ratio:.2f}x"
    return f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x"


def _of(records, kind):
    return [r for r in records if r.get("kind") == kind]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _is_cuda(meta) -> bool:
    return str(meta.get("device", "")).startswith("cuda")


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def header_lines(meta: dict, records: list[dict]) -> list[str]:
    dev = meta.get("gpu") if _is_cuda(meta) else f"CPU {meta.get('cpu')} ({meta.get('logical_cpus')} logical cores, torch threads {meta.get('torch_threads')})"
    lines = [
        f"**Machine**: {dev}; device `{meta.get('device')}`; {meta.get('date_utc')}",
        f"**Versions**: python {meta.get('python')}, torch {meta.get('torch')}, triton {meta.get('triton')}, "
        f"torchvision {meta.get('torchvision')}, pytest-benchmark {meta.get('pytest_benchmark')}"
        + (f", CUDA {meta.get('cuda')}" if meta.get("cuda") else "")
        + (f", spikingjelly {meta.get('spikingjelly')}" if meta.get("spikingjelly") else "")
        + (f", cupy {meta.get('cupy')}" if meta.get("cupy") else "")
        + f"; git {meta.get('git')}",
        f"**Command**: `{meta.get('command')}`" + (" (quick: fewer rounds)" if meta.get("quick") else ""),
    ]
    if meta.get("partial"):
        lines.append("**PARTIAL**: rendered from the records of a run that did not finish (killed by its timeout?).")
    if meta.get("load_average_start") or meta.get("load_average_end"):
        lines.append(f"**Load average** (1/5/15 min) at start: {meta.get('load_average_start')}, at end: "
                     f"{meta.get('load_average_end')} (this run itself adds about 1 per busy core; more means other "
                     "processes shared the CPU and timings are noisier)")
    for c in _of(records, "copy"):
        lines.append(f"**Copy bandwidth** (`dst.copy_(src)`, {c['bytes'] / 2**20:.0f} MiB, 2 x bytes / median): "
                     f"**{c['gb_per_s']:.1f} GB/s** (median {fmt_time(c['median'])}, {c['rounds']} rounds)")
    if not _is_cuda(meta):
        lines.append(f"**{GPU_TODO}**")
        if meta.get("triton_interpreter"):
            lines.append("**Contender 4 (our Triton kernel) runs in the Triton interpreter on CPU: it is checked for "
                         "correctness here but excluded from every timing; likewise the triton training backend.**")
    return lines


def lif_lines(meta: dict, records: list[dict]) -> list[str]:
    lif = _of(records, "lif")
    if not lif:
        return []
    copy = _of(records, "copy")
    copy_gbps = copy[-1]["gb_per_s"] if copy else None
    cuda = _is_cuda(meta)
    by_case: "OrderedDict[tuple, dict]" = OrderedDict()
    for r in lif:
        by_case.setdefault((r["case"], r["mode"]), {})[r["contender"]] = r
    header = ["shape", "dtype", "pass", "contender", "median", "IQR (q1-q3)", "min-max", "rounds", "vs c1", "vs c3", "GB/s"]
    if cuda:
        header.append("% copy BW")
    rows = []
    notes = OrderedDict()
    for (case, mode), by_c in by_case.items():
        ref = by_c.get(REF, {}).get("median")
        comp = by_c.get(COMPILE, {}).get("median")
        for key in sorted(by_c, key=lambda k: CONTENDER_ORDER.index(k) if k in CONTENDER_ORDER else 99):
            r = by_c[key]
            t = r["median"]
            row = [f"{r['shape']} ({r['dims']})", r["dtype"], MODE_NAME[mode], r["label"], fmt_time(t),
                   f"{fmt_time(r['q1'])}-{fmt_time(r['q3'])}", f"{fmt_time(r['min'])}-{fmt_time(r['max'])}", r["rounds"],
                   fmt_x(ref / t) if ref else "-", fmt_x(comp / t) if comp else "-", f"{r['gb_per_s']:.3g}"]
            if cuda:
                row.append(f"{100 * r['gb_per_s'] / copy_gbps:.0f} %" if copy_gbps else "-")
            rows.append(row)
            if r.get("shape_note"):
                notes[r["shape_note"]] = None
            if r.get("compile_seconds") is not None:
                notes.setdefault("compile", []).append(f"{r['shape']}/{r['dtype']} {r['compile_seconds']} s")
    out = ["## LIF layer: median time, spread, speedup vs contenders 1 and 3 (same run)", ""]
    out += _table(header, rows)
    out.append("")
    out.append("Bytes per neuron-step behind GB/s (minimum for the op): fwd 12 B fp32 / 6 B bf16 (read x, write s, save state); "
               "fwd+bwd 24 B / 12 B (plus read grad and state, write grad_x). 'forward' = training forward (input requires grad).")
    for note in notes:
        if note != "compile":
            out.append(f"Shape note: {note}.")
    if "compile" in notes:
        seen = list(OrderedDict.fromkeys(notes["compile"]))
        out.append("torch.compile time per case (once, before timing, not in the figures): " + ", ".join(seen) + ".")
    return out


def saved_lines(records: list[dict]) -> list[str]:
    saved = _of(records, "saved")
    if not saved:
        return []
    table: "OrderedDict[str, dict]" = OrderedDict()
    for r in sorted(saved, key=lambda r: CONTENDER_ORDER.index(r["contender"]) if r["contender"] in CONTENDER_ORDER else 99):
        entry = table.setdefault(r["contender"], {"label": r["label"]})
        held = r.get("bytes_held")
        entry.setdefault(r["dtype"], set()).add((round(r["bytes_all"], 3), round(r["bytes_new"], 3),
                                                 None if held is None else round(held, 2)))

    def cell(values):
        if not values:
            return "-"
        span = lambda v: f"{v[0]:g}" if len(v) == 1 else f"{v[0]:g}-{v[-1]:g}"  # noqa: E731
        alls = sorted({a for a, _, _ in values})
        news = sorted({n for _, n, _ in values})
        helds = sorted({h for _, _, h in values if h is not None})
        return f"{span(alls)} ({span(news)} new" + (f"; {span(helds)} held by the graph" if helds else "") + ")"

    rows = [[e["label"], cell(e.get("fp32")), cell(e.get("bf16"))] for e in table.values()]
    out = ["## Bytes saved for backward per neuron-step (saved_tensors_hooks, all cases)", ""]
    out += _table(["contender", "fp32", "bf16"], rows)
    out += ["", "'new' leaves out storage shared with the input x (which the caller holds anyway); "
                "the fused kernel's limit is 4 B fp32 / 2 B bf16. On CUDA, 'held by the graph' cross-checks "
                "without the hooks: memory allocated after the forward minus before, minus the output."]
    return out


def check_lines(records: list[dict]) -> list[str]:
    checks = _of(records, "check")
    skips = _of(records, "skip")
    if not checks and not skips:
        return []
    per: "OrderedDict[str, dict]" = OrderedDict()
    for r in checks:
        e = per.setdefault(r["contender"], {"label": r["label"], "pass": 0, "fail": [], "specs": set(), "err": 0.0, "rows": []})
        if r["status"] == "pass":
            e["pass"] += 1
        else:
            e["fail"].append(f"{r['case']}: {r.get('reason')}")
        if r.get("spec"):
            e["specs"].add(r["spec"])
        if r.get("grad_rel_err") is not None:
            e["err"] = max(e["err"], r["grad_rel_err"])
        if r["rows_checked"] != r["rows_total"]:
            e["rows"].append(f"{r['case']} {r['rows_checked']}/{r['rows_total']}")
    rows = []
    for key in sorted(per, key=lambda k: CONTENDER_ORDER.index(k) if k in CONTENDER_ORDER else 99):
        e = per[key]
        total = e["pass"] + len(e["fail"])
        spec = ", ".join(sorted(e["specs"])) or "-"
        rows.append([e["label"], f"{e['pass']}/{total}", spec, f"{e['err']:.2g}",
                     "; ".join(e["fail"]) or ("rows checked: " + ", ".join(e["rows"]) if e["rows"] else "all rows")])
    out = []
    if rows:
        out = ["## Correctness gate (before any timing): spikes exact vs contender 1, gradient close", ""]
        out += _table(["contender", "cases passed", "reference met (input dtype / fp32 upcast)", "max grad rel-L2 err", "notes"], rows)
    reasons = OrderedDict()
    for s in skips:
        reasons.setdefault((s["what"], s["reason"]), []).append(s.get("case"))
    if reasons:
        out += (["", "Not run / not timed:"] if out else ["## Not run / not timed", ""])
        for (what, reason), cases in reasons.items():
            n = len(set(cases))
            out.append(f"- {what}: {reason}" + (f" ({n} cases)" if n > 1 else ""))
    return out


def train_lines(meta: dict, records: list[dict]) -> list[str]:
    steps = _of(records, "train_step")
    agree = _of(records, "train_agree")
    maxb = _of(records, "max_batch")
    seed = _of(records, "seed_vs_ours")
    out = []
    if steps:
        cuda = _is_cuda(meta)
        header = ["backend", "batch", "precision", "median step", "IQR", "samples/s", "data"]
        if cuda:
            header.append("peak MiB/step")
        rows = []
        for r in steps:
            row = [r["backend"], r["batch"], r["precision"], fmt_time(r["median"]),
                   f"{fmt_time(r['q1'])}-{fmt_time(r['q3'])}", f"{r['samples_per_s']:,.0f}", r["data"]]
            if cuda:
                row.append(f"{r['peak_mib']:,.0f}" if r.get("peak_mib") is not None else "-")
            rows.append(row)
        out += ["## MLP training step (forward, backward, Adam) per backend", ""] + _table(header, rows)
        out.append("")
    for r in agree:
        out.append(f"Training step, triton vs torch backend (batch {r['batch']}, {r['device']}): loss diff {r['loss_diff']:.2g}, "
                   f"max parameter-gradient rel-L2 diff {r['grad_rel_err']:.2g} -> {r['status']}"
                   + (" (triton in the interpreter: correctness only, not timed)" if r.get("interpreted") else ""))
    if maxb:
        rows = [[r["backend"], r["precision"], f"{r['batch']:,}", f"{r['peak_gib']:.2f}", f"{r['first_over']:,}" if r.get("first_over") else "-"]
                for r in maxb]
        out += ["", "## Largest training batch within 8 GiB (peak torch-allocated memory of a step; CUDA context not included)", ""]
        out += _table(["backend", "precision", "largest batch that fits", "its peak GiB", "smallest tried that did not"], rows)
    if seed:
        r = seed[-1]
        out += ["", f"## CPU training throughput: plain seed vs ours, {r['batches']} batches of {r['batch']} each, one process per pipeline, interleaved x{r['repeats']}", ""]
        rows = [["seed: torchvision MNIST + ToTensor + DataLoader(shuffle) + SeedMLP + Adam", f"{r['seed_sps']:,.0f}",
                 ", ".join(f"{v:,.0f}" for v in r["seed_all"]), "1.00x"],
                ["ours: train.py pipeline (uint8 tensor batched by index, SpikingMLP torch backend, fused Adam)",
                 f"{r['ours_sps']:,.0f}", ", ".join(f"{v:,.0f}" for v in r["ours_all"]), fmt_x(r["ratio"])]]
        for key, label in (("ours_aug", "ours with train.py's default 2-px shift augmentation"),):
            if r.get(f"{key}_sps"):
                rows.append([label, f"{r[f'{key}_sps']:,.0f}", ", ".join(f"{v:,.0f}" for v in r[f"{key}_all"]),
                             fmt_x(r[f"{key}_sps"] / r["seed_sps"])])
        out += _table(["pipeline", "samples/s (median)", "each repeat", "vs seed"], rows)
        out.append(f"\nTarget >= 2.5x (issue 11): {'met' if r['ratio'] >= 2.5 else 'NOT met'} ({r['ratio']:.2f}x); "
                   f"threads: {r['threads']}; data: {r['data']}.")
    return out


def _margins(med: dict, ours: str, rival: str) -> list[tuple[float, str]]:
    """(rival median / our median, "case pass") for every case and pass both were timed in."""
    return [(med[(k[0], k[1], rival)]["median"] / r["median"], f"{k[0]} {MODE_NAME[k[1]]}")
            for k, r in med.items() if k[2] == ours and (k[0], k[1], rival) in med]


def cpu_target_lines(meta: dict, records: list[dict]) -> list[str]:
    """Issue 11's CPU targets for the fused C kernel (contender 3c), from this run's medians."""
    if _is_cuda(meta):
        return []
    lif = _of(records, "lif")
    med = {(r["case"], r["mode"], r["contender"]): r for r in lif}
    ours = {k: r for k, r in med.items() if k[2] == FUSED_CPU}
    if not ours:
        return []
    copy = _of(records, "copy")
    copy_gbps = copy[-1]["gb_per_s"] if copy else None
    rows = []

    def margin_row(rival: str, label: str, need: bool) -> None:
        pairs = _margins(med, FUSED_CPU, rival)
        if not pairs:
            rows.append([label, "not measured (contender unavailable)", "-"])
            return
        worst = min(pairs)
        verdict = ("met" if worst[0] >= 1.0 else "NOT met") if need else ("reached" if worst[0] >= 1.0 else "not reached")
        rows.append([f"{label} ({len(pairs)} cases)", f"slowest margin {fmt_x(worst[0])} ({worst[1]}); all: "
                     + ", ".join(f"{fmt_x(x)}" for x, _ in sorted(pairs, key=lambda p: p[1])), verdict])

    margin_row(COMPILE, "3c >= 1.0x torch.compile of the seed LIF (3) at every shape, dtype, pass", True)
    margin_row(SJ_COMPILED, "goal: 3c >= torch.compile of SpikingJelly's LIFNode (5c)", False)
    for (case, mode, _), r in sorted(ours.items()):
        if case.startswith("large") and copy_gbps:
            frac = r["gb_per_s"] / copy_gbps
            rows.append([f"{case} {MODE_NAME[mode]}: >= {CPU_COPY_FRACTION:.0%} of copy bandwidth (fresh outputs included)",
                         f"{r['gb_per_s']:.3g} GB/s = {frac:.0%} of {copy_gbps:.3g}", "met" if frac >= CPU_COPY_FRACTION else "NOT met"])
    out = ["## CPU targets (issue 11): the fused C kernel, contender 3c", ""]
    out += _table(["target", "measured (medians, this run)", "verdict"], rows)
    return out


def target_rows(meta: dict, records: list[dict], train: dict | None = None) -> list[list[str]]:
    """The issue's GPU targets with the measured value and a verdict (never a projection)."""
    if not _is_cuda(meta):
        return [["all GPU targets", "not measured (no CUDA device in this run)", "to be measured"]]
    lif = _of(records, "lif")
    copy = _of(records, "copy")
    copy_gbps = copy[-1]["gb_per_s"] if copy else None
    med = {(r["case"], r["mode"], r["contender"]): r for r in lif}
    rows = []

    def verdict(ok):
        return "met" if ok else "NOT met"

    for dt in ("fp32", "bf16"):
        r = med.get((f"large-{dt}", "fwdbwd", OURS))
        if r and copy_gbps:
            frac = r["gb_per_s"] / copy_gbps
            rows.append([f"fused fwd+bwd, large shape, {dt}: >= 80 % of copy BW", f"{r['gb_per_s']:.0f} GB/s = {100 * frac:.0f} % of {copy_gbps:.0f}", verdict(frac >= 0.8)])
        else:
            rows.append([f"fused fwd+bwd, large shape, {dt}: >= 80 % of copy BW", "not measured", "-"])
    for dt in ("fp32", "bf16"):
        a, b = med.get((f"mnist-b1024-{dt}", "fwdbwd", REF)), med.get((f"mnist-b1024-{dt}", "fwdbwd", OURS))
        if a and b:
            ratio = a["median"] / b["median"]
            rows.append([f"B=1024,T=6,N=512 {dt} fwd+bwd: >= 20x vs contender 1", fmt_x(ratio), verdict(ratio >= 20)])
    for rival in ("c2-unbind", "c3-compile", *SJ_KEYS):
        pairs = _margins(med, OURS, rival)
        if not pairs:
            if rival in SJ_KEYS:
                rows.append([f"faster than {rival} everywhere", "not measured (contender unavailable)", "-"])
            continue
        worst = min(pairs)
        rows.append([f"faster than {rival} at every shape/dtype/pass ({len(pairs)})", f"slowest margin {fmt_x(worst[0])} ({worst[1]})", verdict(worst[0] > 1)])
    if train is not None:
        rows.append(train["target_row"])
    return rows


def render(snapshot: dict, train: dict | None = None) -> str:
    meta, records = snapshot.get("meta", {}), snapshot.get("records", [])
    out = ["# SNN benchmark results", ""]
    out += ["- " + line for line in header_lines(meta, records)]
    for section in (lif_lines(meta, records), saved_lines(records), check_lines(records), train_lines(meta, records),
                    cpu_target_lines(meta, records)):
        if section:
            out += [""] + section
    out += ["", "## Targets (NVIDIA H200)", ""]
    out += _table(["target", "measured", "verdict"], target_rows(meta, records, train))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# gpu_check.sh's compact table
# ----------------------------------------------------------------------------------------------


def train_summary(metrics_path: Path | None) -> dict | None:
    """Epoch times from train.py's metrics JSONL (epoch 1 includes the kernels' JIT compilation)."""
    if metrics_path is None or not metrics_path.exists():
        return None
    epochs = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    start = next((e for e in epochs if e.get("event") == "start"), {})
    epochs = [e for e in epochs if e.get("event") == "epoch"]
    if not epochs:
        return None
    match = re.search(r"\((\d+) train", start.get("dataset", ""))
    n_train = int(match.group(1)) if match else 60000
    parts = []
    for e in epochs:
        train_s = n_train / e["samples_per_s"]
        parts.append(f"epoch {e['epoch']}: train {train_s:.2f} s ({e['samples_per_s']:,.0f} samples/s), "
                     f"with eval {e['epoch_seconds']:.2f} s, test acc {e['test_accuracy']:.4f}")
    last = epochs[-1]
    last_train = n_train / last["samples_per_s"]
    label = "warm epoch" if len(epochs) > 1 else "epoch 1, includes JIT compilation"
    return {
        "lines": parts,
        "dataset": start.get("dataset"),
        "target_row": [f"train.py --backend triton --amp, batch 1024: MNIST epoch < 1 s ({label})",
                       f"{last_train:.2f} s train ({last['epoch_seconds']:.2f} s with eval)", "met" if last_train < 1 else "NOT met"],
    }


def render_gpu_check(snapshot: dict | None, stages: list[tuple[str, str]], train: dict | None) -> str:
    meta = (snapshot or {}).get("meta", {})
    records = (snapshot or {}).get("records", [])
    out = ["## gpu_check summary", ""]
    if meta.get("partial"):
        out += ["Benchmarks: PARTIAL results (the benchmark stage did not finish).", ""]
    if meta:
        out.append(f"{meta.get('gpu', meta.get('device'))}; torch {meta.get('torch')}, triton {meta.get('triton')}, "
                   f"CUDA {meta.get('cuda')}; git {meta.get('git')}; {meta.get('date_utc')}")
        out.append("")
    rows = [[name, status] for name, status in stages]
    out += _table(["stage", "status"], rows)
    if train:
        out += ["", f"Training run ({train.get('dataset')}): " + "; ".join(train["lines"])]
    if snapshot:
        lif = _of(records, "lif")
        copy = _of(records, "copy")
        copy_gbps = copy[-1]["gb_per_s"] if copy else None
        med = {(r["case"], r["mode"], r["contender"]): r for r in lif}
        cases = list(OrderedDict.fromkeys((r["case"], r["mode"]) for r in lif))
        keys = [k for k in CONTENDER_ORDER if any(r["contender"] == k for r in lif)]
        labels = {r["contender"]: r["label"] for r in lif}
        header = ["case", "pass"] + [labels[k] for k in keys] + ["ours GB/s (% copy)"]
        rows = []
        for case, mode in cases:
            row = [case, MODE_NAME[mode]]
            for k in keys:
                r = med.get((case, mode, k))
                row.append(fmt_time(r["median"]) if r else "-")
            o = med.get((case, mode, OURS))
            row.append(f"{o['gb_per_s']:.0f} ({100 * o['gb_per_s'] / copy_gbps:.0f} %)" if o and copy_gbps else "-")
            rows.append(row)
        if rows:
            out += ["", f"LIF medians (copy bandwidth {copy_gbps:.0f} GB/s):" if copy_gbps else "LIF medians:", ""] + _table(header, rows)
        steps = _of(records, "train_step")
        if steps:
            out += ["", "Training step: " + "; ".join(
                f"{r['backend']}/{r['precision']}/b{r['batch']}: {r['samples_per_s']:,.0f} samples/s"
                + (f", peak {r['peak_mib']:,.0f} MiB" if r.get("peak_mib") else "") for r in steps)]
        maxb = _of(records, "max_batch")
        if maxb:
            out += ["Largest batch in 8 GiB: " + "; ".join(f"{r['backend']}/{r['precision']}: {r['batch']:,}" for r in maxb)]
        saved = [r for r in _of(records, "saved") if r["shape"] == "mnist-b128"]
        if saved:
            out += ["Saved B/neuron-step: " + "; ".join(f"{r['contender']}/{r['dtype']}: {r['bytes_all']:g}" for r in saved)]
    out += ["", "Targets:", ""] + _table(["target", "measured", "verdict"], target_rows(meta, records, train) if snapshot else
                                          ([train["target_row"]] if train else [["-", "no benchmark results", "-"]]))
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="?", help="a pytest-benchmark --benchmark-json file written by this suite")
    parser.add_argument("--gpu-check", action="store_true", help="the compact table of benchmarks/gpu_check.sh")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=STATUS", help="a gpu_check stage and its status")
    parser.add_argument("--train-metrics", type=Path, default=None, help="train.py's metrics JSONL of the training stage")
    parser.add_argument("--records", type=Path, default=None,
                        help="the --bench-records JSON lines, used when the JSON is missing (a run killed by its timeout)")
    args = parser.parse_args(argv)
    snapshot = None
    data = None
    if args.json and Path(args.json).exists():
        try:  # empty or cut short when pytest was killed before writing it
            data = json.loads(Path(args.json).read_text())
        except json.JSONDecodeError:
            data = None
    if data is None and args.records is not None and args.records.exists():
        lines = [json.loads(line) for line in args.records.read_text().splitlines() if line.strip()]
        meta = next((r for r in lines if r.get("kind") == "meta"), {})
        snapshot = {"meta": {k: v for k, v in meta.items() if k != "kind"},
                    "records": [r for r in lines if r.get("kind") != "meta"]}
        snapshot["meta"]["partial"] = True
    elif data is not None:
        snapshot = data.get("snn")
        if snapshot is None:
            print(f"error: {args.json} has no 'snn' section (was it written by pytest benchmarks --benchmark-json?)", file=sys.stderr)
            return 2
    train = train_summary(args.train_metrics)
    if args.gpu_check:
        stages = [tuple(s.split("=", 1)) if "=" in s else (s, "?") for s in args.stage]
        print(render_gpu_check(snapshot, stages, train))
        return 0
    if snapshot is None:
        print("error: give the --benchmark-json file to render", file=sys.stderr)
        return 2
    print(render(snapshot, train))
    return 0


if __name__ == "__main__":
    sys.exit(main())
