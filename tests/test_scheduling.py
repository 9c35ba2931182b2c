"""Issue 13's scheduling pieces on real processes and the real matrix: the latency gate stops a busy worker
and its child processes mid-stage (and continues them), a stopped worker's timings lose exactly the stopped
seconds, and the critical-path order puts the longest expected groups first, learning from recorded times."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import expand, load_config
from harness.pool.coordinator import _descendants, _signal_all, discount_pauses
from harness.pool.schedule import expected_cost, read_cache_costs, schedule, write_cache_costs

ROOT = Path(__file__).resolve().parent.parent


def _state(pid: int) -> str:
    # /proc/<pid>/stat: "pid (comm) S ..."; T = stopped
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_gate_stops_a_worker_and_its_children_and_continues_them():
    import signal

    # a "worker" that spins and has a child (like a compiler subprocess of an AOTInductor export)
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(0.01)'])\n"
            "print(child.pid, flush=True)\n"
            "t = time.perf_counter()\n"
            "while time.perf_counter() - t < 30: pass\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        kids = _descendants(proc.pid)
        assert child in kids
        _signal_all([proc.pid] + kids, signal.SIGSTOP)
        deadline = time.time() + 5
        while time.time() < deadline and {_state(proc.pid), _state(child)} != {"T"}:
            time.sleep(0.02)
        assert _state(proc.pid) == "T" and _state(child) == "T"
        cpu0 = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[11]  # utime
        time.sleep(0.3)
        assert Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[11] == cpu0  # no CPU while stopped
        _signal_all([proc.pid] + kids, signal.SIGCONT)
        time.sleep(0.2)
        assert _state(proc.pid) != "T" and _state(child) != "T"
    finally:
        for pid in _descendants(proc.pid):
            _signal_all([pid], signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_stopped_seconds_leave_the_timings():
    rec = {"cell_s": 60.0, "export_s": 50.0, "stage_times": {"export": 55.0, "latency": 2.0}}
    out = discount_pauses(dict(rec), {"export": 40.0, "run": 1.5})
    assert out["stage_times"] == {"export": 15.0, "latency": 2.0}  # a stage the cell never timed is not invented
    assert out["cell_s"] == 18.5 and out["export_s"] == 10.0 and out["paused_s"] == 41.5
    # near miss: nothing stopped, nothing changed and no paused_s field
    assert discount_pauses(dict(rec), {}) == rec
    # never negative
    assert discount_pauses({"cell_s": 1.0, "stage_times": {"load": 0.5}}, {"load": 3.0})["stage_times"]["load"] == 0.0


def test_critical_path_order_and_recorded_costs(tmp_path):
    from harness.pool.coordinator import group_cells

    cells = expand(load_config(ROOT / "matrix.yaml"), "nightly").cells
    order = schedule(group_cells(cells))
    costs = [expected_cost(g, {}) for g in order]
    assert costs == sorted(costs, reverse=True)
    assert order[0][0].exporter == "aoti"  # a compile of minutes starts at t=0
    ids = lambda groups: [sorted(c.cell_id for c in g) for g in groups]  # noqa: E731
    assert ids(schedule(group_cells(list(reversed(cells))))) == ids(order)  # deterministic
    # recorded times (the cache's cell_costs.json) overrule the table: make one cheap ONNX group the longest
    cheap = order[-1]
    write_cache_costs(tmp_path, [{"cell_id": c.cell_id, "cell_s": 5000.0, "status": "pass", "cache": ""} for c in cheap]
                      + [{"cell_id": "from-the-result-cache", "cell_s": 9.0, "status": "pass", "cache": "result"},
                         {"cell_id": "skipped", "cell_s": 9.0, "status": "skip", "cache": ""}])
    recorded = read_cache_costs(tmp_path)
    assert set(recorded) == {c.cell_id for c in cheap}  # result-cache answers and skips say nothing about cost
    assert schedule(group_cells(cells), recorded)[0] == cheap
    assert read_cache_costs(tmp_path / "nowhere") == {}


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_worker_stopped_with_its_latency_request_in_flight_is_continued_when_granted():
    """The race that hung a run: worker B asks to time latency while the coordinator, not having read that
    request yet, stops B for worker A's timing. When A is done, B's turn must continue B (SIGCONT) before
    its ``go``; a worker that is neither timing nor waiting is continued once nobody times."""
    import multiprocessing as mp
    import signal
    from collections import deque

    from harness.pool.coordinator import Coordinator, _Worker

    procs = [subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"]) for _ in range(2)]
    try:
        class _P:  # the part of multiprocessing.Process the gate uses
            def __init__(self, p):
                self.pid, self._p = p.pid, p

            def is_alive(self):
                return self._p.poll() is None

        pipes = [mp.Pipe() for _ in procs]
        a, b = (_Worker(i, _P(p), pipes[i][0], Path("/dev/null"), 0.0, cell=object(), stage="export", group=deque())
                for i, p in enumerate(procs))
        coord = Coordinator.__new__(Coordinator)
        coord.gate, coord.workers = True, [a, b]
        a.stage, a.waiting = "latency", True
        coord._grant()
        assert pipes[0][1].recv() == ("go",) and b.paused_at is not None
        time.sleep(0.1)
        assert _state(b.proc.pid) == "T"
        b.stage, b.waiting = "latency", True  # its request, read only now
        a.cell, a.stage, a.waiting = None, "idle", False  # A's cell is done
        coord._grant()
        assert pipes[1][1].poll(1) and pipes[1][1].recv() == ("go",)
        assert b.paused_at is None and not b.paused_s  # blocked waiting for go: no stage time to correct
        time.sleep(0.1)
        assert _state(b.proc.pid) != "T"
        # B times; a new cell on A runs its export: A is stopped, and continued when B moves on
        a.cell, a.stage = object(), "export"
        coord._grant()
        assert a.paused_at is not None and b.paused_at is None
        b.stage = "probe"
        coord._grant()
        assert a.paused_at is None and b.paused_at is None
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()


def test_shutdown_kills_a_worker_that_is_still_starting_at_once():
    """Workers are started before the availability checks (they import torch meanwhile); when every miss then
    turns out to be a skip, shutdown must not give a worker that cannot answer yet (it is importing, it holds
    no cell) the 5 s an idle worker gets to exit: it is killed at once. The ready, idle one still gets `stop`."""
    import multiprocessing as mp
    import signal
    import threading

    from harness.pool.coordinator import Coordinator, _Worker

    class _P:  # the part of multiprocessing.Process that shutdown() uses
        def __init__(self, p):
            self.pid, self._p = p.pid, p

        def is_alive(self):
            return self._p.poll() is None

        def kill(self):
            self._p.kill()

        def join(self, timeout=None):
            try:
                self._p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass

    starting = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"])
    # an idle worker that exits on its `stop`, as worker_main does
    idle = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()"], stdin=subprocess.PIPE)
    try:
        pipes = [mp.Pipe() for _ in range(2)]
        w_start = _Worker(0, _P(starting), pipes[0][0], Path("/dev/null"), 0.0)
        w_idle = _Worker(1, _P(idle), pipes[1][0], Path("/dev/null"), 0.0, ready=True)
        coord = Coordinator.__new__(Coordinator)
        coord.workers = [w_start, w_idle]
        t0 = time.perf_counter()
        # the idle one exits 0.5 s after its stop, like a worker finishing its loop
        threading.Timer(0.5, lambda: (idle.stdin.write(b"\n"), idle.stdin.flush())).start()
        coord.shutdown()
        took = time.perf_counter() - t0
        assert pipes[1][1].recv() == ("stop",)  # only the ready one is asked; the other's pipe is just closed
        with pytest.raises(EOFError):
            pipes[0][1].recv()
        assert starting.poll() == -signal.SIGKILL and idle.poll() == 0  # killed vs exited on its own
        assert took < 5.0, took  # the starting worker did not use up the idle one's 5 s allowance
        assert coord.workers == []
    finally:
        for p in (starting, idle):
            if p.poll() is None:
                p.kill()
            p.wait()
