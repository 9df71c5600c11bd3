"""Options, fixtures and the end-of-run report of the benchmark suite.

    pytest benchmarks                                  # everything, on CUDA when present
    pytest benchmarks --bench-report results.md --benchmark-json results.json
    pytest benchmarks --bench-quick                    # fewer rounds (smoke run)

The tables printed last (and written by ``--bench-report``) put every contender of a case side by
side; the same records are stored under ``"snn"`` in the ``--benchmark-json`` file, from which
``python -m benchmarks.report FILE`` renders them again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchmarks.common import DEFAULT_MNIST_DIR, RESULTS, budget_for, lif_cases, load_average, machine_info
from benchmarks.contenders import CONTENDERS


def pytest_addoption(parser):
    group = parser.getgroup("snn benchmarks")
    group.addoption("--bench-device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="device for the LIF and training benchmarks (default: cuda if available)")
    group.addoption("--bench-quick", action="store_true", help="fewer rounds per benchmark (smoke run; spreads are wider)")
    group.addoption("--bench-full-large", action="store_true",
                    help="on CPU, run the large shape at its full B=256 (default there: B=16; ~10 GB and minutes)")
    group.addoption("--bench-report", metavar="FILE", default=None, help="also write the Markdown report to FILE")
    group.addoption("--bench-records", metavar="FILE", default=None,
                    help="append each result to FILE (JSON lines) as it is measured: kept if the run is killed")
    group.addoption("--mnist-dir", metavar="DIR", default=None,
                    help="MNIST root in torchvision's layout (default: $SNN_MNIST_DIR, else ../shared/data)")


def _device(config) -> torch.device:
    choice = config.getoption("--bench-device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda was requested but CUDA is not available")
    return torch.device(choice)


def pytest_configure(config):
    RESULTS.clear()
    config._snn_device = _device(config)
    config._snn_load_start = load_average()
    if config.getoption("--bench-records", None):
        RESULTS.open_sink(config.getoption("--bench-records"), _meta(config))


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "lif_case" in metafunc.fixturenames:
        cases = lif_cases(config._snn_device, config.getoption("--bench-full-large"))
        metafunc.parametrize("lif_case", cases, ids=[c.id for c in cases])
    if "contender" in metafunc.fixturenames:
        metafunc.parametrize("contender", CONTENDERS, ids=[c.key for c in CONTENDERS])


_LIF_TEST_ORDER = ("test_lif_matches_reference", "test_lif_saved_bytes", "test_lif_forward", "test_lif_forward_backward")


def pytest_collection_modifyitems(config, items):
    """Run the LIF tests case by case (each case's inputs and compilations are made once), after
    the copy-bandwidth benchmark and before the training benchmarks."""
    contender_rank = {c.key: i for i, c in enumerate(CONTENDERS)}

    def key(indexed):
        index, item = indexed
        name = getattr(item, "originalname", item.name)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if name == "test_copy_bandwidth":
            return (0, 0, 0, 0, index)
        if "lif_case" in params and name in _LIF_TEST_ORDER:
            cases = lif_cases(config._snn_device, config.getoption("--bench-full-large"))
            return (1, cases.index(params["lif_case"]), _LIF_TEST_ORDER.index(name),
                    contender_rank.get(getattr(params.get("contender"), "key", ""), 0), index)
        return (2, 0, 0, 0, index)

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bench_device(pytestconfig) -> torch.device:
    return pytestconfig._snn_device


@pytest.fixture(scope="session")
def bench_budget(pytestconfig, bench_device):
    return budget_for(bench_device, pytestconfig.getoption("--bench-quick"))


@pytest.fixture(scope="session")
def collector():
    return RESULTS


@pytest.fixture(scope="session")
def lif_store(bench_device, collector):
    from benchmarks.harness import CaseStore

    return CaseStore(bench_device, collector)


@pytest.fixture(scope="session")
def mnist_dir(pytestconfig) -> Path:
    """The real MNIST (``<dir>/MNIST/raw``), or skip: --mnist-dir, $SNN_MNIST_DIR, ../shared/data."""
    chosen = pytestconfig.getoption("--mnist-dir") or os.environ.get("SNN_MNIST_DIR") or DEFAULT_MNIST_DIR
    root = Path(chosen)
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {root}/MNIST/raw (pass --mnist-dir or set SNN_MNIST_DIR)")
    return root


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


def _meta(config) -> dict:
    meta = machine_info(config._snn_device)
    meta["load_average_start"] = config._snn_load_start
    meta["quick"] = config.getoption("--bench-quick")
    meta["full_large"] = config.getoption("--bench-full-large")
    meta["command"] = "pytest " + " ".join(config.invocation_params.args)
    return meta


def _snapshot(config) -> dict:
    return {"meta": _meta(config), "records": list(RESULTS.records)}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["snn"] = _snapshot(config)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS.records:
        return
    from benchmarks.report import render

    text = render(_snapshot(config))
    terminalreporter.write_sep("=", "snn benchmark report (Markdown)")
    terminalreporter.write_line(text)
    path = config.getoption("--bench-report")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
        terminalreporter.write_line(f"report written to {path}")
