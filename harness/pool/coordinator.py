"""The coordinator: owns the worker processes of one run and turns their deaths, overruns and memory
blow-ups into records (``crash``/``timeout``/``skip``), never into a lost run."""

from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

from ..exporters import EXPORTERS
from ..probes import mark_abnormal
from ..runs import RunError
from ..system import physical_memory_mib, rss_mib
from .worker import worker_main


@dataclass
class _Worker:
    idx: int
    proc: Any
    conn: Connection
    log: Path
    started: float
    pid: Optional[int] = None
    ready: bool = False
    cell: Any = None
    cell_t0: float = 0.0
    stage: str = "start"
    stage_t0: float = 0.0
    waiting: bool = False
    log_offset: int = 0
    killed_for: Optional[str] = None
    group: Deque[Any] = field(default_factory=deque)
    partial: Optional[Dict[str, Any]] = None  # the cell's record before its current input probe
    paused_at: Optional[float] = None  # perf_counter when the latency gate stopped it (SIGSTOP), else None
    stopped: List[int] = field(default_factory=list)  # the pids the gate stopped (worker + its children)
    paused_s: Dict[str, float] = field(default_factory=dict)  # seconds stopped during this cell, per stage


def _descendants(pid: int) -> List[int]:
    """Child processes of ``pid``, recursively (Linux ``/proc/<pid>/task/<tid>/children``; [] elsewhere): a
    worker's compiler or converter subprocesses are stopped with it."""
    out: List[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(k) for k in (t / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _signal_all(pids: List[int], sig: int) -> None:
    import os

    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def discount_pauses(rec: Dict[str, Any], paused_s: Dict[str, float]) -> Dict[str, Any]:
    """Take the seconds a worker spent stopped by the latency gate out of its record's timings.

    ``paused_s`` is ``{stage: seconds stopped}``; they are subtracted from ``stage_times[stage]``, from
    ``cell_s`` and, for the export stage, from ``export_s`` (never below 0), and recorded as ``paused_s``
    (total, seconds), so stage times say what the work cost, not how long another worker's latency took."""
    total = sum(paused_s.values())
    if total <= 0:
        return rec
    st = dict(rec.get("stage_times") or {})
    for stage, secs in paused_s.items():
        if stage in st:
            st[stage] = round(max(0.0, st[stage] - secs), 4)
    rec["stage_times"] = st
    if isinstance(rec.get("cell_s"), (int, float)):
        rec["cell_s"] = round(max(0.0, rec["cell_s"] - total), 3)
    if paused_s.get("export") and isinstance(rec.get("export_s"), (int, float)):
        rec["export_s"] = round(max(0.0, rec["export_s"] - paused_s["export"]), 3)
    rec["paused_s"] = round(total, 3)
    return rec


def _signal_name(code: Optional[int]) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _tail(path: Path, offset: int, lines: int = 8, limit: int = 1200) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    raw = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Extension modules:")]
    fatal = [ln for ln in raw if ln.startswith("Fatal Python error")]  # faulthandler's headline
    keep = [ln for ln in raw if not ln.startswith("Fatal Python error")][-lines:]
    if fatal:
        # the Python stack of a fatal signal: show the innermost frames (what was running)
        idx = next((k for k, ln in enumerate(raw) if ln.startswith("Current thread") or ln.startswith("Thread")), None)
        frames = [ln for ln in raw[idx + 1:] if ln.startswith("File")][:3] if idx is not None else []
        before = [ln for ln in raw[: raw.index(fatal[0])]][-2:]
        keep = before + fatal[:1] + frames
    out = " | ".join(ln[:200] for ln in keep)
    return out[-limit:]


def _export_key(c: Any) -> tuple:
    """The fields that decide the cell's plain export: its model and the values of the fields its exporter
    bakes (harness/targets.py; ``simplify`` excluded: the plain export feeds the onnxsim cell), so cells that
    share an artifact share a key (BGMv2: one TorchScript file serves every refine mode)."""
    baked = [f for f in EXPORTERS[c.exporter].bakes if f != "simplify" and hasattr(c, f)]
    return (c.model, c.exporter) + tuple(str(getattr(c, f)) for f in baked)


def _order(cells) -> List[Any]:
    """Cells sharing an artifact next to each other; stable otherwise."""
    return sorted(cells, key=lambda c: (_export_key(c), c.simplify, c.runtime, c.resolution, c.batch))


def group_cells(cells) -> List[List[Any]]:
    """Cells grouped by the export they share (:func:`_export_key`), in a stable order; a group runs on one
    worker, which makes the export once and hands it to the group's other cells through the cache."""
    groups: Dict[tuple, List[Any]] = {}
    for c in _order(cells):
        groups.setdefault(_export_key(c), []).append(c)
    return list(groups.values())


class Coordinator:
    """Owns the workers and ``results.jsonl`` for one run (see the module docstring)."""

    def __init__(self, plan, opts, runner, cache_root: Path, weights_files, threads: int, on_record) -> None:
        self.plan, self.opts, self.runner = plan, opts, runner
        self.cache_root = cache_root
        self.weights_files = weights_files
        self.threads = threads
        self.on_record = on_record
        lim = plan.limits
        self.stage_limit = {**lim.stage_timeout_s, **(opts.stage_timeout_s or {})}
        self.deadline_s = opts.deadline_s if opts.deadline_s is not None else lim.deadline_s
        mem = opts.memory_limit_mib or lim.memory_limit_mib
        total = physical_memory_mib() if mem is None else None
        if total:
            mem = int(0.75 * total / max(1, opts.jobs))
        self.memory_limit_mib = mem
        self.gate = opts.jobs > 1
        self.workers: List[_Worker] = []
        self.spawned = 0
        self.stop: Optional[str] = None
        self.start_failures = 0
        self.log_dir = Path(opts.out_dir) / "logs"
        self.log_dir.mkdir(exist_ok=True)
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")

    # -------------------------------------------------------------- workers
    def spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        idx = self.spawned
        self.spawned += 1
        log = self.log_dir / f"worker-{idx}.log"
        work = max(1, self.threads // max(1, self.opts.jobs))
        proc = self.ctx.Process(target=worker_main, args=(idx, child, str(log), self.threads, self.gate, work),
                                daemon=True, name=f"matrix-worker-{idx}")
        proc.start()
        child.close()
        w = _Worker(idx, proc, parent, log, time.perf_counter())
        self.workers.append(w)
        return w

    def init(self, w: _Worker) -> None:
        w.conn.send(("init", (self.plan, self.opts, self.cache_root, self.weights_files)))

    def kill(self, w: _Worker) -> None:
        if w.paused_at is not None:  # its stopped children continue (and end with it, or finish alone)
            _signal_all(w.stopped, signal.SIGCONT)
            w.paused_at, w.stopped = None, []
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=10)
        try:
            w.conn.close()
        except OSError:
            pass
        if w in self.workers:
            self.workers.remove(w)

    def shutdown(self) -> None:
        """Stop idle workers (``stop``, up to 5 s to exit) and kill the rest; a worker still starting (importing
        torch) holds no cell and is killed at once."""
        for w in list(self.workers):
            if not w.ready and w.cell is None:
                self.kill(w)
        for w in list(self.workers):
            if w.proc.is_alive() and w.ready and w.cell is None:
                try:
                    w.conn.send(("stop",))
                except OSError:
                    pass
        deadline = time.perf_counter() + 5
        for w in list(self.workers):
            w.proc.join(timeout=max(0.0, deadline - time.perf_counter()))
            self.kill(w)

    # -------------------------------------------------------------- records
    def _abnormal(self, w: _Worker, status: str, reason: str, **extra: Any) -> None:
        """Record the end of ``w``'s current cell by the coordinator (crash, timeout, deadline).

        A crash or timeout during an input probe keeps the verdict the worker reported before it
        (``partial``): the probe's outcome is ``crash``/``timeout``, the cell's status is unchanged."""
        if w.partial is not None and w.stage == "probe" and status in ("crash", "timeout"):
            rec = mark_abnormal(dict(w.partial), status, reason, self.runner.s.input_probes)
            rec.update(worker=w.idx, cell_s=round(time.perf_counter() - w.cell_t0, 3),
                       **{k: v for k, v in extra.items() if k not in ("resumable",)})
            cell, w.cell, w.partial = w.cell, None, None
            self.on_record(cell, rec)
            return
        rec = self.runner.base_record(w.cell)
        rec.update(status=status, stage=w.stage, reason=reason, worker=w.idx,
                   cell_s=round(time.perf_counter() - w.cell_t0, 3), **extra)
        cell = w.cell
        w.cell = None
        self.on_record(cell, rec)

    # -------------------------------------------------------------- main loop
    def run(self, groups: List[List[Any]]) -> None:
        """Run ``groups`` of cells (see :func:`group_cells`) until done, interrupted or past the deadline.

        Raises:
            RunError: workers cannot start (three failed starts, or a worker cannot load the weights).
        """
        try:
            self._loop(groups)
        finally:  # never leave a worker (or its compiler) stopped behind
            for w in list(self.workers):
                self._resume(w)

    def _loop(self, groups: List[List[Any]]) -> None:
        self.queue: Deque[Deque[Any]] = deque(deque(g) for g in groups)
        want = min(self.opts.jobs, len(self.queue))
        t_start = time.perf_counter()
        self._last_mem = 0.0
        while not self.stop:
            while len(self.workers) < want and self.queue:
                self.spawn()
            if not self.workers:
                break
            wait([w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers], timeout=0.2)
            for w in list(self.workers):
                self._drain(w)
            for w in list(self.workers):
                if w in self.workers and not w.proc.is_alive():
                    self._drain(w)
                    if w in self.workers:
                        self._died(w)
            self._grant()
            now = time.perf_counter()
            self._watch_time(now)
            self._watch_memory(now)
            if self.deadline_s is not None and now - t_start > self.deadline_s:
                self._deadline()
                return
            for w in list(self.workers):
                if w.ready and w.cell is None:
                    if w.group or self.queue:
                        self._assign(w)
                    else:
                        self._retire(w)
            if not self.queue and not any(w.cell is not None or w.group for w in self.workers):
                break

    def _watch_time(self, now: float) -> None:
        """End a stage past its limit as ``timeout``; give up on a worker that does not start."""
        for w in list(self.workers):
            if w.cell is not None and not w.waiting and w.paused_at is None and w.stage in self.stage_limit:
                limit = self.stage_limit[w.stage]
                if now - w.stage_t0 > limit:
                    stage = w.stage
                    self.kill(w)
                    self._abnormal(w, "timeout", f"timeout: stage {stage!r} ran longer than its limit of "
                                   f"{limit:g} s (limits.stage_timeout_s.{stage} or --stage-timeout)"
                                   + self._stderr_hint(w), timeout_s=limit)
                    self._requeue(w)
            elif not w.ready and now - w.started > self.plan.limits.worker_start_s:
                self.kill(w)
                self._start_failed(w, f"did not start within {self.plan.limits.worker_start_s:g} s")

    def _watch_memory(self, now: float) -> None:
        """Kill a worker whose resident memory passed the limit (its cell is ``crash``), every 0.1 s."""
        if not self.memory_limit_mib or now - self._last_mem <= 0.1:
            return
        self._last_mem = now
        for w in list(self.workers):
            rss = rss_mib(w.proc.pid) if w.proc.pid else None
            if rss is not None and rss > self.memory_limit_mib:
                stage = w.stage
                self.kill(w)
                if w.cell is not None:
                    self._abnormal(w, "crash", f"crash: out of memory: worker RSS {rss:.0f} MiB exceeded "
                                   f"the limit of {self.memory_limit_mib} MiB (limits.memory_limit_mib) "
                                   f"in stage {stage!r}; worker killed" + self._stderr_hint(w),
                                   peak_rss_mib=round(rss))
                    self._requeue(w)

    def _retire(self, w: _Worker) -> None:
        try:
            w.conn.send(("stop",))
        except OSError:
            pass
        w.proc.join(timeout=5)
        self.kill(w)

    def _requeue(self, w: _Worker) -> None:
        """Put the rest of a dead worker's group back at the front of the queue."""
        if w.group:
            self.queue.appendleft(w.group)
            w.group = deque()

    def _stderr_hint(self, w: _Worker) -> str:
        tail = _tail(w.log, w.log_offset)
        return f"; stderr: {tail}" if tail else ""

    def _assign(self, w: _Worker) -> None:
        if not w.group:
            if not self.queue:
                return
            w.group = self.queue.popleft()
        cell = w.group.popleft()
        w.cell, w.stage, w.waiting, w.partial = cell, "start", False, None
        w.paused_s = {}
        w.cell_t0 = w.stage_t0 = time.perf_counter()
        try:
            w.log_offset = w.log.stat().st_size
        except OSError:
            w.log_offset = 0
        try:
            w.conn.send(("cell", cell))
        except OSError:
            pass  # the worker died; _died() records the crash
        self._grant()  # another worker may be timing: this one waits stopped

    def _drain(self, w: _Worker) -> None:
        while True:
            try:
                if not w.conn.poll():
                    return
                msg = w.conn.recv()
            except (EOFError, OSError):
                return
            kind = msg[0]
            if kind == "hello":
                w.pid = msg[1]
                self.init(w)
            elif kind == "ready":
                w.ready = True
            elif kind == "failed":
                self.kill(w)
                self._start_failed(w, msg[1], fatal=True)
                return
            elif kind == "partial":
                w.partial = msg[1]
            elif kind == "stage":
                w.stage, w.stage_t0 = msg[1], time.perf_counter()
                w.waiting = self.gate and msg[1] == "latency"
            elif kind == "done":
                rec = discount_pauses(msg[1], w.paused_s)
                cell = w.cell
                w.cell, w.stage, w.waiting = None, "idle", False
                self.on_record(cell, rec)

    def _grant(self) -> None:
        """The latency gate (``--jobs`` > 1): a worker that reaches its latency stage waits for ``go``; it gets
        it once every other busy worker is stopped (SIGSTOP, with its child processes), wherever it is in its
        stage, and the others continue (SIGCONT) when no worker is timing or waiting to time. So latency is
        timed alone on all cores without holding the others until their stage ends (a compile can take
        minutes); the seconds a worker spends stopped are taken out of its timings (:func:`discount_pauses`)
        and its stage limit."""
        if not self.gate:
            return
        busy = [w for w in self.workers if w.cell is not None]
        timer = next((w for w in busy if w.stage == "latency" and not w.waiting), None)
        grant = timer is None
        if grant:
            waiting = [w for w in busy if w.waiting]
            if not waiting:
                for w in self.workers:
                    self._resume(w)
                return
            timer = waiting[0]
            # it may have been stopped while its request was still in the pipe (it was blocked reading)
            self._resume(timer)
        for w in busy:  # everyone else stops, also a worker that got a new cell while another one times
            if w is not timer and not w.waiting:
                self._pause(w)
        if grant:
            self._go(timer)

    def _pause(self, w: _Worker) -> None:
        if w.paused_at is not None or not w.proc.is_alive():
            return
        pids = [w.proc.pid] + _descendants(w.proc.pid)
        _signal_all(pids, signal.SIGSTOP)
        w.stopped, w.paused_at = pids, time.perf_counter()

    def _resume(self, w: _Worker) -> None:
        if w.paused_at is None:
            return
        _signal_all(w.stopped + _descendants(w.proc.pid) if w.proc.is_alive() else w.stopped, signal.SIGCONT)
        dt = time.perf_counter() - w.paused_at
        if not w.waiting:  # stopped mid-stage; a worker blocked waiting for go was not timing anything
            w.paused_s[w.stage] = w.paused_s.get(w.stage, 0.0) + dt
        w.stage_t0 += dt
        w.paused_at, w.stopped = None, []

    def _go(self, w: _Worker) -> None:
        w.waiting = False
        w.stage_t0 = time.perf_counter()
        try:
            w.conn.send(("go",))
        except OSError:
            pass

    def _died(self, w: _Worker) -> None:
        code = w.proc.exitcode
        self.kill(w)
        if not w.ready:
            self._start_failed(w, f"worker exited during start-up ({_signal_name(code)})" + self._stderr_hint(w))
            return
        if w.cell is None:
            return
        hint = ""
        if code == -signal.SIGKILL:
            hint = " (SIGKILL from outside the harness: often the kernel's OOM killer)"
        self._abnormal(
            w, "crash",
            f"crash: worker died with {_signal_name(code)}{hint} in stage {w.stage!r}" + self._stderr_hint(w),
            exit_code=code, exit_signal=(signal.Signals(-code).name if code is not None and code < 0 else None),
        )
        self._requeue(w)

    def _start_failed(self, w: _Worker, why: str, fatal: bool = False) -> None:
        self.start_failures += 1
        if fatal or self.start_failures >= 3:
            raise RunError(f"worker process could not start: {why} (log: {w.log})")

    def _deadline(self) -> None:
        reason = f"skipped: run deadline of {self.deadline_s:g} s reached"
        for w in list(self.workers):
            if w.cell is not None:
                stage = w.stage
                self.kill(w)
                self._abnormal(w, "skip", f"{reason} during stage {stage!r} (not run to completion)", resumable=True)
            for cell in w.group:
                self._skip(cell, reason)
            w.group.clear()
        while self.queue:
            for cell in self.queue.popleft():
                self._skip(cell, reason)

    def _skip(self, cell, reason: str) -> None:
        rec = self.runner.base_record(cell)
        rec.update(status="skip", stage="queued", reason=reason, resumable=True, cell_s=0.0)
        self.on_record(cell, rec)
