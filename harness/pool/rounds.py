"""Interleaved rounds (the statistics are :mod:`harness.rounds`): after the cells ran, the finalists of each
decision are loaded side by side in one fresh process and timed ``A B C, B C A, C A B, ...``.

Why one fresh process and not a process per round (pyperf's workers): a process per round and finalist costs a
torch import (2-3 s) and a load each time, minutes per decision on 2 cores. What a fresh process buys --- no
state left behind by the cells before (compiles, allocator, thread pools sized for a shared machine) --- this
process has: it starts after every worker has exited, so nothing else runs, with the latency thread count on
all cores. What stays shared within it (one load per finalist) is shared by every finalist alike, and the
rotation gives each the same share of positions in a round. A suspect of the latency gate, which is compared
with another run rather than with a neighbour, is re-loaded every round instead (``reload``): there the load
is part of what differs between two runs.

The process reports each group as it finishes; a group that takes longer than its cap plus two minutes (a
hang) or a process that dies ends the rounds with ``stop: "error: ..."`` for the groups left, never the run.
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..benchmark import Protocol, measure
from ..cache import Cache
from ..models import owner
from ..runtimes import RUNTIMES
from ..rounds import GroupRounds, RoundsProtocol, settle, tight

LOAD_ALLOWANCE_S = 120.0  # per group, on top of cap_s: loading the finalists (an OpenVINO compile, a C++ start)
HARD_CAP = 3.0  # the cap gives way to min_rounds (an interval) up to this many times cap_s
ROUND_BUDGET_MS = 300.0  # timed calls per finalist and round are cut to about this much time (>= 1 call)


def artifact_path(out: Path, cache_root: Path, rec: Dict[str, Any]) -> Optional[Path]:
    """Where the record's artifact is: under the run's folder (``artifact``), else in the cache entry of its
    ``artifact_key``; None when neither exists."""
    rel = rec.get("artifact")
    if not rel:
        return None
    p = out / rel
    if p.exists():
        return p
    key = rec.get("artifact_key")
    if key:
        q = Cache(cache_root).path("artifact", key) / Path(rel).name
        if q.exists():
            return q
    return None


def _runs_for(p50_ms: Optional[float], protocol: RoundsProtocol) -> int:
    if not p50_ms or p50_ms <= 0:
        return protocol.runs
    return max(1, min(protocol.runs, int(ROUND_BUDGET_MS // p50_ms)))


class _Loaded:
    """One finalist loaded in the rounds process: its runtime plug-in, one call's feeds, the burst protocol."""

    def __init__(self, runner: Any, cell: Any, path: Path, rec: Dict[str, Any], protocol: RoundsProtocol) -> None:
        self.runner, self.cell, self.path = runner, cell, path
        a = owner(cell)
        inp = runner.inputs_for(cell)
        self.feeds = a.single_call(a.cast(inp.feeds, cell.precision), cell)
        self.rt_cls = RUNTIMES[cell.runtime]
        self.proto = Protocol(warmup_min_s=0.0, warmup_min_runs=protocol.warmup_runs, measure_min_s=0.0,
                              measure_min_runs=_runs_for(rec.get("p50_ms"), protocol), measure_max_s=60.0,
                              target_ci=0.0)
        self.runtime = None
        self.load()

    def load(self) -> None:
        self.close()
        rt = self.rt_cls()
        rt.prepare(self.runner.cache, self.runner.out)
        rt.load(str(self.path), self.runner.runtime_settings(self.cell))
        self.runtime = rt

    def round_ms(self) -> float:
        """The median (ms) of one short burst: ``warmup_runs`` untimed calls, then the timed ones."""
        rt, feeds, device, batch = self.runtime, self.feeds, self.runner.device, self.cell.batch
        lat = rt.measure_native(feeds, "end-to-end", self.proto, device, batch)
        if lat is None:
            lat = measure(lambda: rt.run(feeds), self.proto, device, batch=batch)
        return float(lat.p50_ms)

    def close(self) -> None:
        if self.runtime is not None:
            try:
                self.runtime.close()
            except Exception:  # noqa: BLE001 - cleanup never changes a measurement
                pass
            self.runtime = None


def measure_group(runner: Any, name: str, cells: Sequence[Tuple[Any, Dict[str, Any], Path]],
                  protocol: RoundsProtocol, reload: bool = False) -> GroupRounds:
    """Rounds of one group (``cells``: ``(cell, record, artifact path)``, the first is the burst's fastest)
    in this process, until every ratio's interval is within ``protocol.target`` (``stop: "target"``),
    ``max_rounds`` (``"max"``) or ``cap_s`` seconds of rounds (``"cap"``; not before ``min_rounds`` unless
    ``HARD_CAP`` x ``cap_s`` have passed: a loaded machine still gets an interval). ``reload``: load every finalist
    afresh before each round (the gate's suspects). A finalist that cannot be loaded or run ends the group
    with ``stop: "error: ..."`` and the rounds so far."""
    g = GroupRounds(group=name, cells=[c.cell_id for c, _, _ in cells],
                    runtime={c.cell_id: c.runtime for c, _, _ in cells},
                    burst_p50_ms={c.cell_id: rec.get("p50_ms") for c, rec, _ in cells},
                    round_ms={c.cell_id: [] for c, _, _ in cells}, loads=0)
    loaded: List[_Loaded] = []
    t0 = time.perf_counter()
    try:
        for c, rec, path in cells:
            loaded.append(_Loaded(runner, c, path, rec, protocol))
        g.loads = 1
        t_rounds = time.perf_counter()
        r = 0
        while True:
            if reload and r > 0:
                for x in loaded:
                    x.load()
                g.loads += 1
            k = r % len(loaded)
            for x in loaded[k:] + loaded[:k]:
                g.round_ms[x.cell.cell_id].append(round(x.round_ms(), 4))
            r += 1
            settle(g)
            if r >= protocol.min_rounds and tight(g, protocol.target):
                g.stop = "target"
                break
            if r >= protocol.max_rounds:
                g.stop = "max"
                break
            spent = time.perf_counter() - t_rounds
            if spent >= protocol.cap_s and (r >= protocol.min_rounds or spent >= HARD_CAP * protocol.cap_s):
                g.stop = "cap"
                break
    except Exception as e:  # noqa: BLE001 - a finalist that fails here is reported, not fatal
        g.stop = f"error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        n = g.rounds
        g.round_ms = {k: v[:n] for k, v in g.round_ms.items()}
        settle(g)
    finally:
        for x in loaded:
            x.close()
    g.seconds = round(time.perf_counter() - t0, 3)
    return g


def rounds_main(conn: Connection, log_path: str, plan: Any, opts: Any, cache_root: str, threads: int,
                jobs: List[Tuple[str, List[Tuple[Any, Dict[str, Any], str]], bool]], protocol: RoundsProtocol) -> None:
    """Entry point of the rounds process: ``("group", GroupRounds dict)`` per job, then ``("done",)``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import torch

    torch.set_num_threads(threads)
    try:
        import torchvision  # noqa: F401 - registers torchvision::roi_align & co. for TorchScript artifacts
    except Exception:  # noqa: BLE001 - a runtime that needs it says so when it loads
        pass
    from ..runner import Runner

    runner = Runner(plan, opts, Cache(Path(cache_root)), threads)
    runner.load_user_pair()
    for name, cells, reload in jobs:
        g = measure_group(runner, name, [(c, rec, Path(p)) for c, rec, p in cells], protocol, reload)
        conn.send(("group", g.as_dict()))
    conn.send(("done",))


def run_rounds(plan: Any, opts: Any, cache_root: Path, threads: int,
               groups: Sequence[Tuple[str, List[Dict[str, Any]]]], protocol: RoundsProtocol,
               reload: bool = False) -> List[GroupRounds]:
    """Measure ``groups`` (``[(name, [records])]``, e.g. :func:`harness.decide.finalists`) in one fresh
    process. Records whose cell is not in ``plan`` or whose artifact is gone are left out of their group (a
    group left with one cell is not measured). Returns one :class:`GroupRounds` per measured group, in order;
    groups the process did not finish (hang, crash) come back with ``stop: "error: ..."``."""
    out = Path(opts.out_dir)
    by_id = {c.cell_id: c for c in plan.cells}
    jobs = []
    for name, recs in groups:
        cells = []
        for rec in recs:
            cell = by_id.get(rec.get("cell_id"))
            path = artifact_path(out, cache_root, rec) if cell is not None else None
            if path is not None:
                cells.append((cell, rec, str(path)))
        if len(cells) >= (1 if reload else 2):
            jobs.append((name, cells, reload))
    if not jobs:
        return []
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log = out / "logs" / "rounds.log"
    proc = ctx.Process(target=rounds_main, args=(child, str(log), plan, opts, str(cache_root), threads, jobs, protocol),
                       daemon=True, name="matrix-rounds")
    proc.start()
    child.close()
    results: List[GroupRounds] = []
    start_deadline = time.perf_counter() + LOAD_ALLOWANCE_S + 60.0  # importing torch and the runtimes
    try:
        for name, cells, _ in jobs:
            deadline = max(start_deadline, time.perf_counter()) + HARD_CAP * protocol.cap_s + LOAD_ALLOWANCE_S
            start_deadline = 0.0
            msg = None
            while time.perf_counter() < deadline:
                if parent.poll(0.5):
                    try:
                        msg = parent.recv()
                    except EOFError:
                        msg = None
                    break
                if not proc.is_alive():
                    break
            if msg is None or msg[0] != "group":
                why = "the rounds process died" if not proc.is_alive() else "no answer within cap_s + load allowance"
                code = proc.exitcode
                for n2, c2, _ in jobs[len(results):]:
                    results.append(GroupRounds(group=n2, cells=[c.cell_id for c, _, _ in c2],
                                               stop=f"error: {why} (exit {code}; log {log})"))
                break
            results.append(GroupRounds(**msg[1]))
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
    return results
