"""Markdown tables from the suite's records, the ``"snn"`` section of a ``--benchmark-json`` file.

    python -m benchmarks.report results.json                     # the tables of RESULTS.md again
    python -m benchmarks.report results.json --gpu-check --stage "kernel tests=passed" --train-metrics M.jsonl

Speedups are ``t(seed-index) / t`` and ``t(seed-compiled) / t`` on medians of the same run (> 1: faster).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.contenders import COMPILED, ORDER, OURS_CPU, OURS_GPU, REFERENCE

MODE = {"fwd": "forward", "fwdbwd": "fwd+bwd"}


def t(s) -> str:
    if s is None:
        return "-"
    unit, scale = next((u, k) for u, k in (("s", 1), ("ms", 1e-3), ("us", 0)) if s >= k)
    return f"{s / (scale or 1e-6):.3g} {unit}"


def x(r) -> str:
    return "-" if r is None else f"{r:.3g}x"


def table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def ranked(rs, key="contender"):
    return sorted(rs, key=lambda r: ORDER.index(r[key]) if r[key] in ORDER else 99)


def render(snap: dict, train: dict | None = None) -> str:
    meta, recs = snap.get("meta", {}), snap.get("records", [])
    of = lambda kind: [r for r in recs if r["kind"] == kind]  # noqa: E731
    cuda = meta.get("device", "").startswith("cuda")
    copy = (of("copy") or [{}])[-1].get("gb_per_s")
    out = ["# SNN benchmark results", "",
           f"- **Machine**: {meta.get('gpu') or meta.get('cpu')} ({meta.get('logical_cpus')} logical cores, torch threads "
           f"{meta.get('torch_threads')}); device `{meta.get('device')}`; {meta.get('date_utc')}; git {meta.get('git')}",
           "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v),
           f"- **Command**: `{meta.get('command')}`" + (" **(PARTIAL: from the records of a killed run)**" if meta.get("partial") else ""),
           f"- **Load average** (1/5/15 min) at start {meta.get('load_average_start')}, at end {meta.get('load_average_end')}"]
    out += [f"- **Copy bandwidth** (`dst.copy_(src)`, {c['bytes'] / 2**20:.0f} MiB, 2 x bytes / median): **{c['gb_per_s']:.1f} GB/s** "
            f"(median {t(c['median'])}, {c['rounds']} rounds, {c.get('timer')})" for c in of("copy")]
    if not cuda:
        out.append("- **GPU figures not measured (no CUDA device); the Triton kernel runs in the interpreter on CPU: checked, not timed.**")
    lif = of("lif")
    med = {(r["case"], r["mode"], r["contender"]): r for r in lif}
    if lif:
        rows = []
        cases = list(dict.fromkeys((r["case"], r["mode"]) for r in lif))
        for case, mode in cases:
            for r in ranked([r for r in lif if (r["case"], r["mode"]) == (case, mode)]):
                vs = [med.get((case, mode, k), {}).get("median") for k in (REFERENCE, COMPILED)]
                rows.append([f"{r['shape']} ({r['dims']})", r["dtype"], MODE[mode], r["label"], t(r["median"]),
                             f"{t(r['q1'])}-{t(r['q3'])}", f"{t(r['min'])}-{t(r['max'])}", r["rounds"],
                             *[x(v / r["median"]) if v else "-" for v in vs], f"{r['gb_per_s']:.3g}"]
                            + ([f"{100 * r['gb_per_s'] / copy:.0f} %" if copy else "-"] if cuda else []))
        out += ["", "## LIF layer: median time, spread, speedup vs the seed loop and its torch.compile (same run)", ""]
        out += table(["shape", "dtype", "pass", "contender", "median", "IQR (q1-q3)", "min-max", "rounds", "vs seed",
                      "vs compiled seed", "GB/s"] + (["% copy BW"] if cuda else []), rows)
        out += ["", "GB/s from the minimum bytes per neuron-step: fwd 12 B fp32 / 6 B bf16, fwd+bwd 24 B / 12 B (benchmarks/common.py)."]
        out += [f"Shape note: {n}." for n in dict.fromkeys(r["shape_note"] for r in lif if r.get("shape_note"))]
        compiles = dict.fromkeys(f"{r['case']} {r['compile_seconds']} s" for r in lif if r.get("compile_seconds") is not None)
        if compiles:
            out.append("Compilation per case (before timing, not in the figures): " + ", ".join(compiles) + ".")
    if of("saved"):
        cells = {}
        for r in ranked(of("saved")):
            held = f"; {r['bytes_held']:.3g} held" if r.get("bytes_held") is not None else ""
            cells.setdefault(r["label"], {}).setdefault(r["dtype"], set()).add(f"{r['bytes_all']:.4g} ({r['bytes_new']:.4g} new{held})")
        out += ["", "## Bytes saved for backward per neuron-step (saved_tensors_hooks; 'new': not shared with the input)", ""]
        out += table(["contender", "fp32", "bf16"], [[k, ", ".join(sorted(v.get("fp32", "-"))), ", ".join(sorted(v.get("bf16", "-")))]
                                                     for k, v in cells.items()])
    checks = ranked(of("check"))
    if checks:
        rows = {}
        for r in checks:
            e = rows.setdefault(r["label"], [r["label"], 0, 0, set(), 0.0, []])
            e[1] += r["status"] == "pass"
            e[2] += 1
            e[3].add(r.get("spec") or "none")
            e[4] = max(e[4], r.get("grad_rel_err") or 0.0)
            if r["status"] != "pass" or r["rows_checked"] != r["rows_total"]:
                e[5].append(f"{r['case']}: {r.get('reason') or 'rows %d/%d' % (r['rows_checked'], r['rows_total'])}")
        out += ["", "## Correctness gate (before any timing): spikes exact vs the seed loop, gradient close", ""]
        out += table(["contender", "cases passed", "reference met", "max grad rel-L2", "notes"],
                     [[e[0], f"{e[1]}/{e[2]}", ", ".join(sorted(e[3])), f"{e[4]:.2g}", "; ".join(e[5]) or "all rows"] for e in rows.values()])
    skips = dict.fromkeys(f"- {s['what']}: {s['reason']}" for s in of("skip"))
    out += ["", "Not run / not timed:", *skips] if skips else []
    if of("train_step"):
        out += ["", "## MLP training step (forward, backward, Adam) per backend", ""]
        out += table(["backend", "batch", "precision", "median step", "IQR", "samples/s", "data", "peak MiB"],
                     [[r["backend"], r["batch"], r["precision"], t(r["median"]), f"{t(r['q1'])}-{t(r['q3'])}",
                       f"{r['samples_per_s']:,.0f}", r["data"], f"{r['peak_mib']:,.0f}" if r.get("peak_mib") else "-"] for r in of("train_step")])
    out += [f"\nTraining step, triton vs torch backend (batch {r['batch']}): loss diff {r['loss_diff']:.2g}, max gradient rel-L2 "
            f"{r['grad_rel_err']:.2g} -> {r['status']}" for r in of("train_agree")]
    if of("max_batch"):
        out += ["", "## Largest training batch within 8 GiB (peak allocated memory of a step)", ""]
        out += table(["backend", "precision", "largest batch that fits", "its peak GiB", "smallest that did not"],
                     [[r["backend"], r["precision"], f"{r['batch']:,}", f"{r['peak_gib']:.2f}", r.get("first_over") or "-"] for r in of("max_batch")])
    for r in of("seed_vs_ours")[-1:]:
        out += ["", f"## CPU training throughput: plain seed vs ours, {r['batches']} batches of {r['batch']}, one process per pipeline, "
                f"interleaved x{r['repeats']}", ""]
        out += table(["pipeline", "samples/s (median)", "each repeat", "vs seed"],
                     [[name, f"{r[k + '_sps']:,.0f}", ", ".join(f"{v:,.0f}" for v in r[k + "_all"]), x(r[k + "_sps"] / r["seed_sps"])]
                      for name, k in (("seed: torchvision MNIST + DataLoader + SeedMLP + Adam", "seed"),
                                      ("ours: train.py's pipeline, torch backend", "ours"), ("ours with 2-px shift augmentation", "ours_aug"))])
        out.append(f"\nTarget >= 2.5x (issue 11): {'met' if r['ratio'] >= 2.5 else 'NOT met'} ({r['ratio']:.2f}x); data: {r['data']}.")
    out += ["", "## Targets", ""] + table(["target", "measured", "verdict"], targets(med, copy, cuda, train))
    return "\n".join(out)


def targets(med: dict, copy, cuda: bool, train: dict | None) -> list[list[str]]:
    """Issue 11's CPU targets (the fused C kernel) or the H200's (the Triton kernel), measured, never projected."""
    ours = OURS_GPU if cuda else OURS_CPU
    rows = []
    rivals = ("seed-unbind", COMPILED, "sj-triton") if cuda else (COMPILED, "sj-compiled")
    for rival in rivals:
        pairs = [(med[(c, m, rival)]["median"] / r["median"], f"{c} {MODE[m]}") for (c, m, k), r in med.items()
                 if k == ours and (c, m, rival) in med]
        worst = min(pairs, default=None)
        rows.append([f"{ours} faster than {rival} at every case and pass ({len(pairs)})",
                     f"slowest margin {x(worst[0])} ({worst[1]})" if worst else "not measured", "-" if not worst else "met" if worst[0] >= 1 else "NOT met"])
    need = 0.8 if cuda else 0.6
    for (c, m, k), r in med.items():
        if k == ours and c.startswith("large") and copy and (m == "fwdbwd" or not cuda):
            rows.append([f"{c} {MODE[m]}: >= {need:.0%} of copy bandwidth", f"{r['gb_per_s']:.3g} GB/s = {r['gb_per_s'] / copy:.0%}",
                         "met" if r["gb_per_s"] / copy >= need else "NOT met"])
    for dt in ("fp32", "bf16") if cuda else ():
        a, b = med.get((f"mnist-b1024-{dt}", "fwdbwd", REFERENCE)), med.get((f"mnist-b1024-{dt}", "fwdbwd", OURS_GPU))
        rows.append([f"B=1024 {dt} fwd+bwd: >= 20x vs the seed loop", x(a["median"] / b["median"]) if a and b else "not measured",
                     ("met" if a["median"] / b["median"] >= 20 else "NOT met") if a and b else "-"])
    return rows + ([train["target_row"]] if train else []) + ([] if cuda else [["GPU targets", "not measured (no CUDA device)", "to be measured"]])


def train_summary(path: Path | None) -> dict | None:
    """Epoch times from train.py's metrics JSONL (epoch 1 includes the kernels' JIT compilation)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path and path.exists() else []
    epochs = [e for e in lines if e.get("event") == "epoch"]
    if not epochs:
        return None
    start = next((e for e in lines if e.get("event") == "start"), {})
    n = int(m.group(1)) if (m := re.search(r"\((\d+) train", start.get("dataset", ""))) else 60000
    last = n / epochs[-1]["samples_per_s"]
    return {"lines": [f"epoch {e['epoch']}: train {n / e['samples_per_s']:.2f} s, with eval {e['epoch_seconds']:.2f} s, "
                      f"test acc {e['test_accuracy']:.4f}" for e in epochs], "dataset": start.get("dataset"),
            "target_row": [f"train.py --backend triton --amp, batch 1024: MNIST epoch < 1 s ({'warm epoch' if len(epochs) > 1 else 'epoch 1, JIT included'})",
                           f"{last:.2f} s train", "met" if last < 1 else "NOT met"]}


def load(json_path: str | None, records: Path | None) -> dict | None:
    try:
        return json.loads(Path(json_path).read_text())["snn"]
    except (TypeError, OSError, ValueError, KeyError):  # missing, cut short by a kill, or not ours
        if records is None or not records.exists():
            return None
    lines = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    meta = next((r for r in lines if r["kind"] == "meta"), {})
    return {"meta": {**meta, "partial": True}, "records": [r for r in lines if r["kind"] != "meta"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="?", help="a --benchmark-json file written by this suite")
    parser.add_argument("--gpu-check", action="store_true", help="gpu_check.sh's table: the stages, then the report")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=STATUS")
    parser.add_argument("--train-metrics", type=Path, help="train.py's metrics JSONL of the training stage")
    parser.add_argument("--records", type=Path, help="the --bench-records JSON lines, used when the JSON is missing (a killed run)")
    args = parser.parse_args(argv)
    snap, train = load(args.json, args.records), train_summary(args.train_metrics)
    if args.gpu_check:
        print("\n".join(["## gpu_check summary", ""] + table(["stage", "status"], [(s.split("=", 1) + ["?"])[:2] for s in args.stage])
                        + ([f"\nTraining run ({train['dataset']}): " + "; ".join(train["lines"])] if train else [])))
    if snap is None:
        print("no benchmark results" if args.gpu_check else f"error: no 'snn' records in {args.json}", file=sys.stdout if args.gpu_check else sys.stderr)
        return 0 if args.gpu_check else 2
    print(("\n" if args.gpu_check else "") + render(snap, train))
    return 0


if __name__ == "__main__":
    sys.exit(main())
