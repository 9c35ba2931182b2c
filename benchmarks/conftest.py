"""pytest-benchmark fixtures: one prepared runtime per cell of the `bench` profile (exports come from the
harness cache, so re-runs only time inference)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pytest_addoption(parser):
    parser.addoption("--matrix-profile", default="bench", help="matrix.yaml profile whose cells are benchmarked")


def pytest_generate_tests(metafunc):
    if "bench_cell" in metafunc.fixturenames:
        from harness.config import expand, load_config

        plan = expand(load_config(ROOT / "matrix.yaml"), metafunc.config.getoption("--matrix-profile"))
        metafunc.parametrize("bench_cell", plan.cells, ids=[c.cell_id for c in plan.cells], scope="session")


@pytest.fixture(scope="session")
def bench_runner(request, tmp_path_factory):
    """A harness Runner with the bench profile's weights, cache and output dir (a pytest tmp folder, removed
    with pytest's own retention, so benchmark runs do not pile up folders in /tmp)."""
    from harness.system import usable_cores
    from harness.cache import Cache, default_root
    from harness.config import expand, load_config
    from harness.runs import RunOptions, check_out_dir
    from harness.runner import Runner

    plan = expand(load_config(ROOT / "matrix.yaml"), request.config.getoption("--matrix-profile"))
    out = tmp_path_factory.mktemp("bench")
    opts = RunOptions(out_dir=out)
    runner = Runner(plan, opts, Cache(Path(os.environ.get("MATRIX_CACHE_DIR") or default_root())),
                    usable_cores())
    check_out_dir(out)
    runner.prepare_weights()
    return runner
