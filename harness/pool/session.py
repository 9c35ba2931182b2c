"""One ``harness run``: what is kept (``--resume``), what the result cache answers, what the workers run,
and how every record is judged and written (:func:`run_plan`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..cache import Cache, default_root, link_or_copy, make_key
from ..keys import CellKeys
from ..record import RecordError, new_record, validate
from ..rounds import GroupRounds
from ..runtimes import RUNTIMES
from ..runs import (CACHEABLE_STATUSES, RERUN_STATUSES, RunError, RunSummary, append_record, check_out_dir,
                       read_records, stage_seconds)
from ..rules import apply_rule, matching_rules, pick_rule
from ..system import gpu_device_nodes, usable_cores
from .coordinator import Coordinator, group_cells
from .rounds import run_rounds
from .schedule import read_cache_costs, schedule, write_cache_costs
from .worker import FAULTS_ENV


def _rewrite_records(path: Path, records: List[Dict[str, Any]]) -> None:
    """Atomically replace ``results.jsonl`` with ``records`` (drops a torn last line)."""
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, default=str, allow_nan=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_plan(plan, opts, finalists=None):
    """Run all cells of ``plan`` in worker processes; return ``(RunSummary, CellKeys)`` (the keys carry the
    run's weights and input facts for environment.json: ``weights_info``, ``input_conversion``, ``threads``).

    ``finalists(records, protocol) -> [(group name, [records])]`` (e.g. :func:`harness.decide.finalists`):
    with the profile's ``settings.latency.rounds.cap_s`` > 0, those groups are re-measured in interleaved
    rounds after the cells ran (:mod:`harness.pool.rounds`; ``summary.rounds``).

    Records go to ``<out>/results.jsonl`` as each cell ends. With ``opts.resume``, cells that already
    have a final record are kept and not run; with ``opts.rerun_failed``, records with status fail,
    error, crash or timeout are dropped and their cells run again.

    Raises:
        RunError, CheckpointError, InputError: before any cell runs, for problems with the run as a
            whole (unwritable output, bad checkpoint, unusable images, resume of another config).
    """
    session = RunSession(plan, opts)
    session.finalists = finalists
    session.prepare()
    return session.execute(), session.keys


class RunSession:
    """State of one run (see :func:`run_plan`). The torch-side :class:`~harness.runner.Runner` is only built
    when something has to be computed, so a fully cached re-run never imports torch."""

    def __init__(self, plan, opts) -> None:
        self.plan, self.opts = plan, opts
        self.out = Path(opts.out_dir)
        self.jobs = max(1, int(opts.jobs))
        self.threads = usable_cores()  # latency is timed alone on all cores (other workers wait), whatever --jobs is
        self.cache_root = self.out / ".cache-private" if opts.no_cache else (
            Path(opts.cache_dir) if opts.cache_dir else default_root())
        self.cache = Cache(self.cache_root)
        self.runner: Any = None
        self.keys: Any = CellKeys(plan, opts, self.threads)
        self.files: Optional[Dict[str, Any]] = None
        self.results = self.out / "results.jsonl"
        self.summary = RunSummary(jobs=self.jobs)
        self.coord: Optional[Coordinator] = None
        self.bar: Any = None
        self.interrupted: Optional[str] = None
        self.finalists: Any = None

    def torch_runner(self):
        if self.runner is None:
            from ..runner import Runner

            self.runner = Runner(self.plan, self.opts, self.cache, self.threads, keys=self.keys)
        return self.runner

    # ------------------------------------------------------------------ before any cell
    def prepare(self) -> None:
        """Everything that can reject the run happens before anything is written: images, checkpoint,
        ``--resume`` of another configuration, an unwritable ``--out``."""
        opts = self.opts
        if opts.src or opts.bgr:
            self.torch_runner().load_user_pair()
        if opts.checkpoint is not None:
            self.files = self.torch_runner().prepare_weights()
        else:
            self.keys.weights_ids()
        kept = self._kept() if (opts.resume or opts.rerun_failed) else []
        check_out_dir(self.out)
        if opts.resume or opts.rerun_failed:
            _rewrite_records(self.results, kept)
        elif self.results.exists():
            self.results.unlink()
        (self.out / "run.json").write_text(json.dumps({
            "fingerprint": self.plan.fingerprint(), "profile": self.plan.profile, "config": opts.config_path,
            "filter": getattr(opts, "filter_expr", None), "checkpoint": str(opts.checkpoint) if opts.checkpoint else None,
            "src": opts.src, "bgr": opts.bgr, "pad": opts.pad, **(getattr(opts, "shard_info", None) or {}),
        }, indent=2))
        self.summary = RunSummary(records=list(kept), jobs=self.jobs, kept=len(kept))

    def _kept(self) -> List[Dict[str, Any]]:
        """Records of the earlier run in ``--out`` that ``--resume`` / ``--rerun-failed`` keep."""
        flag = "--resume" if self.opts.resume else "--rerun-failed"
        run_json = self.out / "run.json"
        if not self.results.is_file() or not run_json.is_file():
            raise RunError(f"{flag} {str(self.out)!r}: no results.jsonl and run.json there (not a harness output directory)")
        before = json.loads(run_json.read_text())
        if before.get("fingerprint") != self.plan.fingerprint():
            raise RunError(
                f"{flag} {str(self.out)!r}: that run used another configuration (profile {before.get('profile')!r}, "
                f"fingerprint {before.get('fingerprint')}; now profile {self.plan.profile!r}, fingerprint "
                f"{self.plan.fingerprint()}); rerun with the same --config/--profile/--filter or use a new --out"
            )
        wanted = {c.cell_id for c in self.plan.cells}
        try:
            old = read_records(self.results)
        except ValueError as e:
            raise RunError(f"{flag}: {e}") from None
        drop = set(RERUN_STATUSES) if self.opts.rerun_failed else set()
        by_id = {r["cell_id"]: r for r in old
                 if r["cell_id"] in wanted and not r.get("resumable") and r["status"] not in drop}
        return list(by_id.values())

    # ------------------------------------------------------------------ records
    def on_record(self, cell, rec: Dict[str, Any], key: Optional[str] = None) -> None:
        """Cache a raw record (when it is a property of the cell), judge it by the rules, append it."""
        if self.summary.stopped_by:
            return
        rec = dict(rec)
        rec.setdefault("cache", "")
        rec.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        rec["raw_status"] = rec["status"]
        rec = typed_record(rec)
        if _cacheable(rec):
            self.cache.put_json("result", key or self.keys.result_key(cell), rec)
        rec = apply_rule(rec, pick_rule(rec, matching_rules(cell, self.plan.rules)))
        try:
            append_record(self.results, rec)
        except OSError as e:
            self.summary.stopped_by = (f"could not append to {self.results}: {e.strerror or e}; the "
                                       f"{len(self.summary.records)} records before it are kept")
            if self.coord is not None:
                self.coord.stop = "disk"
            return
        self.summary.records.append(rec)
        if rec.get("cache") != "result":
            self.summary.stage_s += stage_seconds(rec)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rec['status']}: {cell.cell_id}"[:70])
            self.bar.update(1)

    def _from_cache(self, todo) -> List[Any]:
        """Answer the cells the result cache knows (their artifacts are linked back in); return the misses."""
        misses = []
        for cell in todo:
            key = self.keys.result_key(cell)
            hit = self.cache.get_json("result", key) if not self.opts.rerun_failed else None
            if hit is None:
                misses.append(cell)
                continue
            hit = {k: v for k, v in hit.items() if k != "rule"}
            hit["cache"] = "result"
            if hit.get("artifact") and hit.get("artifact_key"):
                name = Path(hit["artifact"]).name
                entry = self.cache.path("artifact", hit["artifact_key"])
                if (entry / name).is_file():
                    (self.out / "artifacts" / cell.cell_id).mkdir(parents=True, exist_ok=True)
                    link_or_copy(entry / name, self.out / "artifacts" / cell.cell_id / name)
            self.on_record(cell, hit, key)
            if self.summary.stopped_by:
                break
        return misses

    def _unavailable_here(self, cells) -> List[Any]:
        """Record ``skip`` for the cells whose runtime or exporter cannot run on this machine (no CUDA, no C++
        compiler, a package missing; :meth:`harness.keys.CellKeys.unavailable`, which the worker asks too), as a
        worker would (:meth:`harness.runner.Runner.run_cell`: same reason,
        stage ``load``), without starting workers for them; return the other cells. These skips are not
        cached (installing CUDA must run them), so before this a warm re-run started two workers just to
        record them (11.5 s instead of about 1 s for the ci profile's 197 CUDA cells)."""
        rest = []
        for cell in cells:
            why = None if self.summary.stopped_by else self.keys.unavailable(cell)
            if not why:
                rest.append(cell)
                continue
            rec = new_record(cell.model, **self.keys.base_record(cell)).put(
                stage_times={}, status="skip", stage="load", reason=f"skipped: {why}", cell_s=0.0).as_dict()
            self.on_record(cell, rec)
        return rest

    # ------------------------------------------------------------------ the run
    def execute(self) -> RunSummary:
        done_ids = {r["cell_id"] for r in self.summary.records}
        todo = [c for c in self.plan.cells if c.cell_id not in done_ids]
        t0 = time.perf_counter()
        if self.opts.progress and todo:
            from tqdm import tqdm

            self.bar = tqdm(total=len(todo), unit="cell", dynamic_ncols=True, file=sys.stderr, desc=self.plan.profile)
        misses = self._from_cache(todo)
        old_handlers = self._install_signal_handlers()
        try:
            if misses and not self.summary.stopped_by and not self.interrupted:
                self._start_workers(misses)  # they import torch while the availability checks import theirs
            misses = self._unavailable_here(misses)
            if misses and not self.summary.stopped_by and not self.interrupted:
                self._run_workers(misses)
            elif self.files is None and not self.keys.link_cached_weights(self.cache, self.out):
                self.torch_runner().prepare_weights()  # weights.pth in the output dir, as in a full run
            if self.coord is not None:  # the rounds run alone: every worker has exited
                self.coord.shutdown()
            self._rounds()
        finally:
            if self.coord is not None:  # also workers started for cells that then could not run here
                self.coord.shutdown()
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            if self.bar is not None:
                self.bar.close()
            if self.opts.no_cache:
                shutil.rmtree(self.cache_root, ignore_errors=True)
        return self._finish(time.perf_counter() - t0)

    def _rounds(self) -> None:
        """Re-measure each decision's finalists in interleaved rounds (``settings.latency.rounds``), reusing a
        group's rounds from the cache when every one of its records came from the result cache (the same
        cells, settings, code and machine: :meth:`harness.keys.CellKeys.result_key`)."""
        proto = self.plan.settings.latency.rounds.protocol()
        if (not proto.enabled or self.finalists is None or self.summary.stopped_by or self.interrupted):
            return
        by_id = {c.cell_id: c for c in self.plan.cells}
        groups = self.finalists(self.summary.records, proto)
        todo, done = [], {}
        for name, recs in groups:
            cells = [by_id[r["cell_id"]] for r in recs if r.get("cell_id") in by_id]
            key = make_key("rounds", {"group": name, "protocol": proto.__dict__,
                                      "cells": [self.keys.result_key(c) for c in cells]})
            hit = self.cache.get_json("rounds", key) if all(r.get("cache") == "result" for r in recs) else None
            if hit is not None:
                done[name] = GroupRounds(**{**hit, "cached": True})
            else:
                todo.append((name, recs, key))
        if todo:
            for g in run_rounds(self.plan, self.opts, self.cache_root, self.threads,
                                [(n, recs) for n, recs, _ in todo], proto):
                done[g.group] = g
                key = next(k for n, _, k in todo if n == g.group)
                if not g.stop.startswith("error"):
                    self.cache.put_json("rounds", key, g.as_dict())
        self.summary.rounds = [done[n] for n, _ in groups if n in done]

    def _install_signal_handlers(self) -> Dict[Any, Any]:
        """SIGINT/SIGTERM stop the workers; every finished cell is already on disk."""
        def handler(signum, frame):  # noqa: ARG001
            self.interrupted = signal.Signals(signum).name
            if self.coord is not None:
                self.coord.stop = self.interrupted

        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, handler)
        return old

    def _start_workers(self, misses) -> None:
        """Start the workers for the cache misses before anything else is done for them (each takes 2-4 s to
        import torch and the runtimes; :meth:`_unavailable_here` and the weights take as long in this process).
        Cells of CUDA runtimes on a machine without a GPU device node are not counted (they become skips, and
        a warm re-run must not start workers for them). A wrong guess only costs time: :meth:`_run_workers`
        starts missing workers and :meth:`Coordinator.run` retires idle ones."""
        gpu = gpu_device_nodes()
        self._spawn_for([c for c in misses if gpu or RUNTIMES[c.runtime].device != "cuda"])

    def _spawn_for(self, cells) -> None:
        """Workers up to one per group of ``cells`` sharing an export, at most ``--jobs`` (the coordinator is
        made on first use; :meth:`execute` shuts it down)."""
        want = min(self.jobs, len(group_cells(cells)))
        if want and self.coord is None:
            self.coord = Coordinator(self.plan, self.opts, self.keys, self.cache_root, None, self.threads,
                                     self.on_record)
        for _ in range(want - (len(self.coord.workers) if self.coord else 0)):
            self.coord.spawn()

    def _run_workers(self, misses) -> None:
        self._spawn_for(misses)  # workers import torch while weights are prepared
        coord = self.coord
        runner = self.torch_runner()  # imports torch (not counted as stage time)
        t_prep = time.perf_counter()
        coord.weights_files = self.files if self.files is not None else runner.prepare_weights()
        self.summary.stage_s += time.perf_counter() - t_prep  # calibration is model work, not overhead
        coord.stop = self.interrupted
        # longest expected groups first (this cache's recorded cell times, else harness/shard.py's table)
        coord.run(schedule(group_cells(misses), read_cache_costs(self.cache_root)))

    def _finish(self, wall_s: float) -> RunSummary:
        s = self.summary
        s.interrupted = self.interrupted
        s.wall_s = wall_s
        fresh = s.records[s.kept:]
        write_cache_costs(self.cache_root, fresh)
        s.cache = {
            "root": "private (--no-cache)" if self.opts.no_cache else str(self.cache_root),
            "result_hits": sum(1 for r in fresh if r.get("cache") == "result"),
            "artifact_hits": sum(1 for r in fresh if r.get("cache") != "result" and r.get("cached_artifact")),
            "cells_run": sum(1 for r in fresh if r.get("cache") != "result"),
        }
        return s


def typed_record(rec: Dict[str, Any]) -> Dict[str, Any]:
    """``rec`` validated against the typed cell record (:mod:`harness.record`). A record with an undeclared
    field or a mistyped value (a harness bug) is kept, minus the bad fields, as an ``error`` at stage
    ``harness`` whose reason names the field: never a lost cell, never a silent extra column."""
    try:
        return validate(rec)
    except RecordError as e:
        bad = new_record(rec.get("model"))
        for k, v in rec.items():
            try:
                bad.put(**{k: v})
            except RecordError:
                pass
        return bad.put(status="error", stage="harness", reason=f"RecordError: {e}").as_dict()


def _cacheable(rec: Dict[str, Any]) -> bool:
    """A raw record is a property of the cell (cached under its result key) unless it is a crash/timeout,
    a harness bug, a deadline skip, a runtime missing *here*, a probe that killed the worker, already a
    cache hit, or the outcome of an injected fault."""
    environmental = rec["status"] == "skip" and rec.get("stage") == "load"
    return (rec["status"] in CACHEABLE_STATUSES and rec.get("stage") != "harness" and not rec.get("resumable")
            and not environmental and not rec.get("probe_abnormal") and rec.get("cache") != "result"
            and not os.environ.get(FAULTS_ENV))
