"""Latency benchmarks with pytest-benchmark (``nox -s bench``): one benchmark per cell of the ``bench``
profile, end-to-end from host arrays, after the harness's own export and parity check.

The JSON (``--benchmark-json``) carries pytest-benchmark's machine info, so ``--benchmark-compare``
works across runs, and ``python -m harness report DIR --benchmark-json FILE`` adds it to a report.
A cell whose runtime is unavailable here (e.g. CUDA on a CPU machine) is skipped with the reason.
"""

from __future__ import annotations

import pytest


def test_latency(benchmark, bench_runner, bench_cell):
    from harness.exporters import EXPORTERS
    from harness.models import owner
    from harness.stages import positional_call
    from harness.runtimes import RUNTIMES, Runtime

    cell = bench_cell
    why = RUNTIMES[cell.runtime].unavailable() or EXPORTERS[cell.exporter].unavailable(cell.simplify)
    if why:
        pytest.skip(why)
    cell_dir = bench_runner.out / "artifacts" / cell.cell_id
    cell_dir.mkdir(parents=True, exist_ok=True)
    ref = bench_runner.reference(cell, cell.precision)
    try:
        art, _ = bench_runner.export(cell, cell_dir)
    except Exception as e:  # noqa: BLE001 - an export failure is a finding of the matrix, not of the benchmark
        pytest.skip(f"export failed: {getattr(e, 'exc', e)!r}"[:200])
    rt = RUNTIMES[cell.runtime]()
    if type(rt).measure_native is not Runtime.measure_native:
        pytest.skip(f"{cell.runtime} times itself inside its own process (see the matrix report); pytest-benchmark "
                    "would time the transfer to that process, not inference")
    rt.load(str(art.path), bench_runner.runtime_settings(cell))
    feeds = owner(cell).cast(bench_runner.inputs_for(cell).feeds, cell.precision)
    src, bgr = feeds["src"], feeds["bgr"]
    run = positional_call(rt)
    outs = run(src, bgr)
    max_abs = float(abs(outs[0].astype("float32") - ref[0]).max())
    benchmark.extra_info.update(cell_id=cell.cell_id, device=bench_runner.device, exporter=art.exporter,
                                max_abs_pha_vs_eager=max_abs, batch=cell.batch)
    result = benchmark.pedantic(run, args=(src, bgr), warmup_rounds=5, rounds=20, iterations=1)
    assert len(result) == 6 and result[0].shape == tuple(src.shape[:1]) + (1,) + tuple(src.shape[2:])
