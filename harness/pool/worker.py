"""The worker process: imports torch once, then runs the cells the coordinator sends (see ``worker_main``)."""

from __future__ import annotations

import faulthandler
import os
import resource
import signal
from multiprocessing.connection import Connection

from .. import faults
from ..cache import Cache

FAULTS_ENV = "MATRIX_FAULTS"  # harness/faults.py


def worker_main(idx: int, conn: Connection, log_path: str, threads: int, gate: bool, work_threads: int) -> None:
    """Entry point of a worker process: import torch once, then run cells sent by the coordinator.

    Protocol (tuples over ``conn``): worker -> ``("hello", pid)``, ``("ready",)``, ``("stage", name)``,
    ``("partial", record)`` (the verdict so far, before each input probe), ``("done", record)``,
    ``("failed", message)``; coordinator -> ``("init", payload)``,
    ``("cell", cell)``, ``("go",)`` (with ``gate``, after a ``("stage", "latency")``: the coordinator has stopped
    the other workers), ``("stop",)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when workers stop
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    faulthandler.enable()  # a segfault leaves a Python traceback in the log
    conn.send(("hello", os.getpid()))
    import torch

    torch.set_num_threads(work_threads)  # this worker's share of the cores; latency uses ``threads``
    from ..runner import Runner

    msg = conn.recv()
    if msg[0] != "init":
        return
    plan, opts, cache_root, weights_files = msg[1]
    try:
        runner = Runner(plan, opts, Cache(cache_root), threads)
        runner.load_user_pair()
        runner.use_weights(weights_files)
    except Exception as e:  # noqa: BLE001 - reported to the coordinator, which stops the run
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return

    def on_stage(stage: str) -> None:
        conn.send(("stage", stage))
        if gate and stage == "latency":
            conn.recv()  # ("go",): every other worker is stopped (harness/pool/coordinator.py, _grant)
        faults.inject(runner.current_cell.cell_id, stage)

    runner.on_stage = on_stage
    runner.on_partial = lambda rec: conn.send(("partial", rec))
    conn.send(("ready",))
    while True:
        msg = conn.recv()
        if msg[0] != "cell":
            break
        rec = runner.run_cell(msg[1])
        rec["worker"] = idx
        rec["worker_max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        conn.send(("done", rec))
