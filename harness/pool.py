"""Coordinator and worker processes: run a :class:`~harness.config.Plan` so that no cell can take the
run down with it.

Cells run in worker subprocesses (``spawn``), each of which imports torch once and runs many cells. The
coordinator (this process) hands out cells grouped by the artifact they share, and watches every
worker:

- a worker that dies (segfault, abort, ``os._exit``, killed) ends only its current cell, as ``crash``
  with the stage it was in, the signal or exit code and the last lines of its stderr; it is replaced;
- a stage that runs past its limit (``limits.stage_timeout_s``) ends the cell as ``timeout``;
- a worker whose resident memory passes ``limits.memory_limit_mib`` is killed (``crash``, "out of
  memory") before the kernel's OOM killer picks a victim;
- after ``limits.deadline_s`` the cells not yet finished are ``skip`` (``--resume`` runs them later);
- SIGINT/SIGTERM stop the workers; every finished cell is already on disk.

While one worker measures latency, no other worker runs a stage (the coordinator holds the others
at their next stage boundary), so ``--jobs`` changes throughput, not the numbers.

Each record is appended to ``results.jsonl`` and fsynced as soon as its cell ends.
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

MIB = 2**20
FAULTS_ENV = "MATRIX_FAULTS"  # harness/faults.py


# ------------------------------------------------------------------------------------------ worker
def _worker_main(idx: int, conn: Connection, log_path: str, threads: int, gate: bool, work_threads: int) -> None:
    """Entry point of a worker process: import torch once, then run cells sent by the coordinator.

    Protocol (tuples over ``conn``): worker -> ``("hello", pid)``, ``("ready",)``, ``("stage", name)``,
    ``("partial", record)`` (the verdict so far, before each input probe), ``("done", record)``,
    ``("failed", message)``; coordinator -> ``("init", payload)``,
    ``("cell", cell)``, ``("go",)`` (with ``gate``, after each ``stage``), ``("stop",)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when workers stop
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    faulthandler.enable()  # a segfault leaves a Python traceback in the log
    conn.send(("hello", os.getpid()))
    import torch

    torch.set_num_threads(work_threads)  # this worker's share of the cores; latency uses ``threads``
    from . import faults
    from .cache import Cache
    from .runner import Runner

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
        if gate:
            conn.recv()  # ("go",)
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


# ------------------------------------------------------------------------------------------ coordinator
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


def _rss_mib(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        return None


def physical_memory_mib() -> Optional[float]:
    """Total physical memory in MiB (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB
    except (ValueError, OSError, AttributeError):
        return None


def _order(cells) -> List[Any]:
    """Cells sharing an artifact next to each other; stable otherwise."""
    return sorted(
        cells,
        key=lambda c: (c.backbone, c.exporter, c.precision, c.opset or 0, c.crop_method, c.replace_method,
                       c.refine_mode, c.simplify, c.runtime, c.resolution, c.batch),
    )


def group_cells(cells) -> List[List[Any]]:
    """Cells grouped by the export they share (same backbone, exporter, crop, replace, precision,
    and for ONNX the refine mode and opset), in a stable order; a group runs on one worker."""
    groups: Dict[tuple, List[Any]] = {}
    for c in _order(cells):
        key = (c.backbone, c.exporter, c.crop_method, c.replace_method, c.precision)
        if c.exporter in ("onnx", "onnx-dynamo"):
            key += (c.refine_mode, c.opset)
        groups.setdefault(key, []).append(c)
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
        proc = self.ctx.Process(target=_worker_main, args=(idx, child, str(log), self.threads, self.gate, work),
                                daemon=True, name=f"matrix-worker-{idx}")
        proc.start()
        child.close()
        w = _Worker(idx, proc, parent, log, time.perf_counter())
        self.workers.append(w)
        return w

    def init(self, w: _Worker) -> None:
        w.conn.send(("init", (self.plan, self.opts, self.cache_root, self.weights_files)))

    def kill(self, w: _Worker) -> None:
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
            from .probes import mark_abnormal

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
        self.queue: Deque[Deque[Any]] = deque(deque(g) for g in groups)
        want = min(self.opts.jobs, len(self.queue))
        t_start = time.perf_counter()
        last_mem = 0.0
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
            for w in list(self.workers):
                if w.cell is not None and not w.waiting and w.stage in self.stage_limit:
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
            if self.memory_limit_mib and now - last_mem > 0.1:
                last_mem = now
                for w in list(self.workers):
                    rss = _rss_mib(w.proc.pid) if w.proc.pid else None
                    if rss is not None and rss > self.memory_limit_mib:
                        stage = w.stage
                        self.kill(w)
                        if w.cell is not None:
                            self._abnormal(w, "crash", f"crash: out of memory: worker RSS {rss:.0f} MiB exceeded "
                                           f"the limit of {self.memory_limit_mib} MiB (limits.memory_limit_mib) "
                                           f"in stage {stage!r}; worker killed" + self._stderr_hint(w),
                                           peak_rss_mib=round(rss))
                            self._requeue(w)
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
        w.cell_t0 = w.stage_t0 = time.perf_counter()
        try:
            w.log_offset = w.log.stat().st_size
        except OSError:
            w.log_offset = 0
        try:
            w.conn.send(("cell", cell))
        except OSError:
            pass  # the worker died; _died() records the crash

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
                w.waiting = self.gate
            elif kind == "done":
                rec = msg[1]
                cell = w.cell
                w.cell, w.stage, w.waiting = None, "idle", False
                self.on_record(cell, rec)

    def _grant(self) -> None:
        if not self.gate:
            return
        busy = [w for w in self.workers if w.cell is not None]
        timing = any(w.stage == "latency" and not w.waiting for w in busy)
        if timing:
            return
        waiting_lat = [w for w in busy if w.waiting and w.stage == "latency"]
        if waiting_lat:
            if any(not w.waiting for w in busy):
                return  # let the others reach a stage boundary first
            self._go(waiting_lat[0])
            return
        for w in busy:
            if w.waiting:
                self._go(w)

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
        from .records import RunError

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


# ------------------------------------------------------------------------------------------ run_plan
def _rewrite_records(path: Path, records: List[Dict[str, Any]]) -> None:
    """Atomically replace ``results.jsonl`` with ``records`` (drops a torn last line)."""
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, default=str, allow_nan=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_plan(plan, opts):
    """Run all cells of ``plan`` in worker processes; return ``(RunSummary, Runner)``.

    Records go to ``<out>/results.jsonl`` as each cell ends. With ``opts.resume``, cells that already
    have a final record are kept and not run; with ``opts.rerun_failed``, records with status fail,
    error, crash or timeout are dropped and their cells run again.

    Raises:
        RunError, CheckpointError, InputError: before any cell runs, for problems with the run as a
            whole (unwritable output, bad checkpoint, unusable images, resume of another config).
    """
    from .benchmark import physical_cores
    from .cache import Cache, default_root, link_or_copy
    from .rules import apply_rule, matching_rules, pick_rule
    from .keys import CellKeys
    from .records import (
        CACHEABLE_STATUSES,
        RERUN_STATUSES,
        RunError,
        RunSummary,
        append_record,
        check_out_dir,
        stage_seconds,
    )
    from .report import read_records

    out = Path(opts.out_dir)
    jobs = max(1, int(opts.jobs))
    threads = physical_cores()  # latency is timed alone on all cores (other workers wait), whatever --jobs is
    if opts.no_cache:
        cache_root = out / ".cache-private"
    else:
        cache_root = Path(opts.cache_dir) if opts.cache_dir else default_root()
    cache = Cache(cache_root)
    runner: Any = None  # the torch-side Runner, only when something has to be computed

    def torch_runner():
        nonlocal runner
        if runner is None:
            from .runner import Runner

            runner = Runner(plan, opts, cache, threads)
            runner.weights_id.update(keys.weights_id)
        return runner

    keys: Any = CellKeys(plan, opts, threads)
    # everything that can reject the run happens before anything is written
    files = None
    if opts.src or opts.bgr:
        torch_runner().load_user_pair()
    if opts.checkpoint is not None:
        files = torch_runner().prepare_weights()
        keys = runner
    else:
        keys.weights_ids()
    results = out / "results.jsonl"
    run_json = out / "run.json"
    kept: List[Dict[str, Any]] = []
    if opts.resume or opts.rerun_failed:
        flag = "--resume" if opts.resume else "--rerun-failed"
        if not results.is_file() or not run_json.is_file():
            raise RunError(f"{flag} {str(out)!r}: no results.jsonl and run.json there (not a harness output directory)")
        before = json.loads(run_json.read_text())
        if before.get("fingerprint") != plan.fingerprint():
            raise RunError(
                f"{flag} {str(out)!r}: that run used another configuration (profile {before.get('profile')!r}, "
                f"fingerprint {before.get('fingerprint')}; now profile {plan.profile!r}, fingerprint "
                f"{plan.fingerprint()}); rerun with the same --config/--profile/--filter or use a new --out"
            )
        wanted = {c.cell_id for c in plan.cells}
        try:
            old = read_records(results)
        except ValueError as e:
            raise RunError(f"{flag}: {e}") from None
        drop = set(RERUN_STATUSES) if opts.rerun_failed else set()
        by_id: Dict[str, Dict[str, Any]] = {}
        for r in old:
            if r["cell_id"] in wanted and not r.get("resumable") and r["status"] not in drop:
                by_id[r["cell_id"]] = r
        kept = list(by_id.values())
    check_out_dir(out)
    if opts.resume or opts.rerun_failed:
        _rewrite_records(results, kept)
    elif results.exists():
        results.unlink()
    run_json.write_text(json.dumps({
        "fingerprint": plan.fingerprint(), "profile": plan.profile, "config": opts.config_path,
        "filter": getattr(opts, "filter_expr", None), "checkpoint": str(opts.checkpoint) if opts.checkpoint else None,
        "src": opts.src, "bgr": opts.bgr, "pad": opts.pad,
    }, indent=2))

    summary = RunSummary(records=list(kept), jobs=jobs, kept=len(kept))
    done_ids = {r["cell_id"] for r in kept}
    todo = [c for c in plan.cells if c.cell_id not in done_ids]
    t0 = time.perf_counter()
    bar = None
    if opts.progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="cell", dynamic_ncols=True, file=sys.stderr, desc=plan.profile)

    def on_record(cell, rec: Dict[str, Any], key: Optional[str] = None) -> None:
        if summary.stopped_by:
            return
        rec = dict(rec)
        rec.setdefault("cache", "")
        rec.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        rec["raw_status"] = rec["status"]
        environmental = rec["status"] == "skip" and rec.get("stage") == "load"  # a runtime missing *here*
        if rec["status"] in CACHEABLE_STATUSES and rec.get("stage") != "harness" and not rec.get("resumable") \
                and not environmental and not rec.get("probe_abnormal") \
                and rec.get("cache") != "result" and not os.environ.get(FAULTS_ENV):  # injected faults are not results
            cache.put_json("result", key or keys.result_key(cell), rec)
        rec = apply_rule(rec, pick_rule(rec, matching_rules(cell, plan.rules)))
        try:
            append_record(results, rec)
        except OSError as e:
            summary.stopped_by = (f"could not append to {results}: {e.strerror or e}; the "
                                  f"{len(summary.records)} records before it are kept")
            if coord is not None:
                coord.stop = "disk"
            return
        summary.records.append(rec)
        if rec.get("cache") != "result":
            summary.stage_s += stage_seconds(rec)
        if bar is not None:
            bar.set_postfix_str(f"{rec['status']}: {cell.cell_id}"[:70])
            bar.update(1)

    coord: Optional[Coordinator] = None  # only when some cell has to run
    misses = []
    for cell in todo:
        key = keys.result_key(cell)
        hit = cache.get_json("result", key) if not opts.rerun_failed else None
        if hit is None:
            misses.append(cell)
            continue
        hit = {k: v for k, v in hit.items() if k != "rule"}
        hit["cache"] = "result"
        if hit.get("artifact") and hit.get("artifact_key"):
            name = Path(hit["artifact"]).name
            entry = cache.path("artifact", hit["artifact_key"])
            if (entry / name).is_file():
                (out / "artifacts" / cell.cell_id).mkdir(parents=True, exist_ok=True)
                link_or_copy(entry / name, out / "artifacts" / cell.cell_id / name)
        on_record(cell, hit, key)
        if summary.stopped_by:
            break

    interrupted: Dict[str, Optional[str]] = {"sig": None}
    old_handlers = {}

    def handler(signum, frame):  # noqa: ARG001
        interrupted["sig"] = signal.Signals(signum).name
        if coord is not None:
            coord.stop = interrupted["sig"]

    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, handler)
    try:
        if misses and not summary.stopped_by and not interrupted["sig"]:
            coord = Coordinator(plan, opts, keys, cache_root, None, threads, on_record)
            want = min(jobs, len(group_cells(misses)))
            for _ in range(want):  # workers import torch while this process prepares the weights
                coord.spawn()
            try:
                torch_runner()  # imports torch (not counted as stage time)
                t_prep = time.perf_counter()
                coord.weights_files = files if files is not None else runner.prepare_weights()
                summary.stage_s += time.perf_counter() - t_prep  # calibration is model work, not overhead
                keys = coord.runner = runner
                coord.stop = interrupted["sig"]
                coord.run(group_cells(misses))
            finally:
                coord.shutdown()
        elif files is None and not keys.link_cached_weights(cache, out):
            torch_runner().prepare_weights()  # weights.pth in the output dir, as in a full run
            keys = runner
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        if bar is not None:
            bar.close()
        if opts.no_cache:
            shutil.rmtree(cache_root, ignore_errors=True)
    summary.interrupted = interrupted["sig"]
    summary.wall_s = time.perf_counter() - t0
    fresh = summary.records[len(kept):]
    summary.cache = {
        "root": "private (--no-cache)" if opts.no_cache else str(cache_root),
        "result_hits": sum(1 for r in fresh if r.get("cache") == "result"),
        "artifact_hits": sum(1 for r in fresh if r.get("cache") != "result" and r.get("cached_artifact")),
        "cells_run": sum(1 for r in fresh if r.get("cache") != "result"),
    }
    return summary, keys
