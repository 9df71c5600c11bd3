"""Options, fixtures and the end-of-run report of the benchmark suite (``benchmarks/README.md``).

Rounds and time per benchmark are pytest-benchmark's (``--benchmark-max-time``, ``--benchmark-min-rounds``);
our records (checks, saved bytes, timings with their labels) go under ``"snn"`` in ``--benchmark-json``,
from which ``python -m benchmarks.report FILE`` renders the tables of RESULTS.md again.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path

import pytest
import torch

from benchmarks.common import DEFAULT_MNIST_DIR, RESULTS, lif_cases, load_average
from benchmarks.contenders import CONTENDERS, ORDER


def pytest_addoption(parser):
    group = parser.getgroup("snn benchmarks")
    group.addoption("--bench-device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    group.addoption("--bench-full-large", action="store_true", help="on CPU, the large shape at its full B=256 (~10 GB, minutes)")
    group.addoption("--bench-report", metavar="FILE", help="also write the Markdown report to FILE")
    group.addoption("--bench-records", metavar="FILE", help="append each record to FILE (JSON lines) as it comes: kept if the run is killed")
    group.addoption("--mnist-dir", metavar="DIR", help="MNIST root in torchvision's layout (default: $SNN_MNIST_DIR, else ../shared/data)")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _meta(config) -> dict:
    from pytest_benchmark.plugin import get_cpu_info
    from pytest_benchmark.utils import get_commit_info

    device = config._snn_device
    commit = get_commit_info()
    meta = dict(date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), device=str(device),
                cpu=get_cpu_info().get("brand_raw") or platform.machine(), logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                versions={d: _version(d) for d in ("torch", "triton", "torchvision", "pytest-benchmark", "spikingjelly")},
                git=f"{commit.get('id', '?')[:7]}{'+dirty' if commit.get('dirty') else ''}",
                load_average_start=config._snn_load_start, load_average_end=load_average(),
                command="pytest " + " ".join(config.invocation_params.args))
    if device.type == "cuda":
        meta.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return meta


def pytest_configure(config):
    choice = config.getoption("--bench-device")
    if choice == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda was requested but CUDA is not available")
    config._snn_device = torch.device(choice if choice != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    config._snn_load_start = load_average()
    RESULTS.clear()
    RESULTS.sink = Path(config.getoption("--bench-records")) if config.getoption("--bench-records") else None
    if RESULTS.sink:
        RESULTS.sink.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.sink.write_text("")
        RESULTS.add("meta", **_meta(config))


def pytest_generate_tests(metafunc):
    if "lif_case" in metafunc.fixturenames:
        cases = lif_cases(metafunc.config._snn_device, metafunc.config.getoption("--bench-full-large"))
        metafunc.parametrize("lif_case", cases, ids=[c.id for c in cases])
    if "contender" in metafunc.fixturenames:
        metafunc.parametrize("contender", CONTENDERS, ids=ORDER)


HAND_WRITTEN = "<!-- hand-written from here on: --bench-report rewrites only what is above this line -->"
LIF_TEST_ORDER = ("test_lif_matches_reference", "test_lif_saved_bytes", "test_lif_timed")


def pytest_collection_modifyitems(config, items):
    """Copy bandwidth first, then the LIF tests case by case (one case's inputs and compilations at a
    time), then the rest."""
    def key(item):
        name, params = getattr(item, "originalname", item.name), getattr(getattr(item, "callspec", None), "params", {})
        if name == "test_copy_bandwidth":
            return (0,)
        if name in LIF_TEST_ORDER and "lif_case" in params:
            step = LIF_TEST_ORDER.index(name) + (params.get("mode") == "fwdbwd")
            return (1, params["lif_case"].id, step, ORDER.index(params["contender"].key))
        return (2,)

    cases = [c.id for c in lif_cases(config._snn_device, config.getoption("--bench-full-large"))]
    rank = lambda k: (k[0], cases.index(k[1]), *k[2:]) if len(k) > 1 else k  # noqa: E731
    items.sort(key=lambda item: rank(key(item)))


@pytest.fixture(scope="session")
def bench_device(pytestconfig) -> torch.device:
    return pytestconfig._snn_device


@pytest.fixture(scope="session")
def records():
    return RESULTS


@pytest.fixture(scope="session")
def lif_store(bench_device):
    from benchmarks.harness import CaseStore

    return CaseStore(bench_device, RESULTS)


@pytest.fixture(scope="session")
def mnist_dir(pytestconfig) -> Path:
    """The real MNIST (``<dir>/MNIST/raw``), or skip."""
    root = Path(pytestconfig.getoption("--mnist-dir") or os.environ.get("SNN_MNIST_DIR") or DEFAULT_MNIST_DIR)
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {root}/MNIST/raw (pass --mnist-dir or set SNN_MNIST_DIR)")
    return root


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["snn"] = {"meta": _meta(config), "records": [r for r in RESULTS if r["kind"] != "meta"]}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not any(r["kind"] != "meta" for r in RESULTS):
        return
    from benchmarks.report import render

    text = render({"meta": _meta(config), "records": [r for r in RESULTS if r["kind"] != "meta"]})
    terminalreporter.write_sep("=", "snn benchmark report (Markdown)")
    terminalreporter.write_line(text)
    if config.getoption("--bench-report"):  # replaces the generated part; keeps what follows HAND_WRITTEN
        path = Path(config.getoption("--bench-report"))
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text() if path.exists() else ""
        path.write_text(text + "\n" + (f"\n{old[old.index(HAND_WRITTEN):]}" if HAND_WRITTEN in old else ""))
