"""Command line: ``python -m harness run ...``, ``python -m harness verify ARTIFACT`` and
``python -m harness report DIR``.

Exit codes: 0 nothing failed unexpectedly; 1 some cell is ``fail``, ``error``, ``xpass``, ``crash`` or
``timeout``; 2 bad config, bad arguments or bad input (nothing is run), or results could not be written
(finished records are kept); 130 / 143 interrupted by SIGINT / SIGTERM (finished cells are kept and
reported; ``--resume DIR`` continues).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from model.errors import ModelInputError

from .config import DEFAULT_CONFIG, STAGES, ConfigError, expand, load_config
from .decide import finalists
from .diff import add_parser as add_diff
from .diff import cmd_diff, diff_dirs, to_markdown
from .diff import write as write_diff
from .inputs import InputError, image_size
from .pool import run_plan
from .runs import UNEXPECTED_STATUSES, RunError, RunOptions, read_records
from .report import write_report
from .report.writers import write_environment
from .rounds import ROUNDS_FILE, between_run_spread, spreads_dict, write_rounds
from .shard import ShardError, cmd_merge, parse_shard, read_costs, shard_plan
from .shard import add_parser as add_merge
from .system import usable_cores
from .verify import add_parser as add_verify
from .verify import run_verify


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m harness", description="export-compatibility matrix of the registered matting models")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the matrix and write the report")
    r.add_argument("--config", default=None, help=f"matrix file (default: {DEFAULT_CONFIG})")
    r.add_argument("--profile", default=None, help="profile name from the config (default: its default_profile)")
    r.add_argument("--out", default=None, help="output directory (default: reports/latest)")
    r.add_argument("--filter", default=None,
                   help="comma-separated terms, all must match: key=value[|value] on cell fields "
                        "(e.g. 'exporter=onnx,precision=fp32') or substrings of the cell id")
    r.add_argument("--checkpoint", default=None, help="official BMV2 .pth state_dict (default: calibrated weights)")
    r.add_argument("--src", default=None, help="your own source image (needs --bgr)")
    r.add_argument("--bgr", default=None, help="your own background image (needs --src)")
    r.add_argument("--pad", action="store_true", help="zero-pad --src/--bgr to multiples of 4 instead of rejecting them")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--list", action="store_true", help="print the selected cell ids and exit")
    r.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes (default: the number of physical cores)")
    r.add_argument("--stage-timeout", default=None, metavar="STAGE=S[,STAGE=S]",
                   help="override limits.stage_timeout_s, e.g. 'export=900,run=60'")
    r.add_argument("--deadline", type=float, default=None, metavar="S",
                   help="whole-run limit in seconds; unfinished cells are then 'skip' (resumable)")
    r.add_argument("--memory-limit-mib", type=_positive_int, default=None, metavar="MIB",
                   help="kill a worker above this resident memory (cell status 'crash')")
    r.add_argument("--cache-dir", default=None, help="content-addressed cache (default: $MATRIX_CACHE_DIR or "
                   "~/.cache/matting-export-matrix)")
    r.add_argument("--no-cache", action="store_true", help="ignore the shared cache (a private one is used and deleted)")
    again = r.add_mutually_exclusive_group()
    again.add_argument("--resume", metavar="DIR", default=None,
                       help="continue the run in DIR: run only cells without a record (same config required)")
    again.add_argument("--rerun-failed", metavar="DIR", default=None,
                       help="re-run the cells in DIR whose status is fail, error, crash or timeout")
    r.add_argument("--baseline", metavar="DIR", default=None,
                   help="after the run, compare with the run in DIR (`harness diff DIR OUT`): diff.md/diff.html in "
                        "OUT and a 'changed since baseline' box atop report.html; a regression (new failure, lost "
                        "config, new xpass, significantly slower) exits 1")
    r.add_argument("--no-baseline", dest="baseline", action="store_const", const=None,
                   help="compare with no baseline (undoes an earlier --baseline, e.g. the one `nox -s matrix` "
                        "passes; the last of the two wins)")
    r.add_argument("--shard", default=None, metavar="K/N",
                   help="run only part K of N of the selected cells (a deterministic, cost-balanced split; "
                        "`python -m harness merge OUT DIR...` combines the N output directories)")
    r.add_argument("--shard-costs", default=None, metavar="FILE",
                   help="results.jsonl (or its directory) of an earlier run whose cell times balance the split "
                        "(give every shard the same file; default: a built-in table)")
    r.add_argument("--exit-zero", action="store_true",
                   help="exit 0 even with unexpected results or a baseline regression (bad input still exits 2)")
    add_verify(sub)
    add_diff(sub)
    add_merge(sub)
    rep = sub.add_parser("report", help="rebuild report.html/results.csv/summary.md from DIR/results.jsonl")
    rep.add_argument("dir")
    rep.add_argument("--benchmark-json", default=None, metavar="FILE",
                     help="add a pytest-benchmark JSON file (nox -s bench) to the report")
    return p


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _stage_timeouts(text: Optional[str]) -> dict:
    out = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        stage, _, val = item.partition("=")
        if stage not in STAGES:
            raise ConfigError(f"--stage-timeout: unknown stage {stage!r}; expected some of {list(STAGES)}")
        try:
            out[stage] = float(val)
        except ValueError:
            raise ConfigError(f"--stage-timeout {item!r}: {val!r} is not a number of seconds") from None
        if out[stage] <= 0:
            raise ConfigError(f"--stage-timeout {item!r}: must be > 0 seconds")
    return out


def _resume_args(args: argparse.Namespace) -> Optional[str]:
    """Fill run arguments not given on the command line from DIR/run.json (for --resume/--rerun-failed)."""
    import json

    d = Path(args.resume or args.rerun_failed)
    if args.out is not None and Path(args.out).resolve() != d.resolve():
        return f"--out {args.out!r} conflicts with {'--resume' if args.resume else '--rerun-failed'} {str(d)!r}"
    args.out = str(d)
    meta_path = d / "run.json"
    if not meta_path.is_file():
        return f"{str(d)!r} has no run.json: not a directory written by `python -m harness run`"
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        return f"{meta_path}: unreadable ({e})"
    for key in ("config", "profile", "filter", "checkpoint", "src", "bgr", "shard", "shard_costs"):
        if getattr(args, key) is None and meta.get(key) is not None:
            setattr(args, key, meta[key])
    args.pad = args.pad or bool(meta.get("pad"))
    return None


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_run(args: argparse.Namespace) -> int:
    """``harness run``: plan, run, report; exit 0 (nothing unexpected), 1 (unexpected results), 2 (bad input),
    130/143 (interrupted: ``--resume`` continues)."""
    if args.resume or args.rerun_failed:
        problem = _resume_args(args)
        if problem:
            return _fail(problem)
    args.config = args.config or str(DEFAULT_CONFIG)
    args.out = args.out or "reports/latest"
    try:
        plan = _sized_to_src(expand(load_config(args.config), args.profile, args.filter), args.src)
        timeouts = _stage_timeouts(args.stage_timeout)
    except ConfigError as e:
        return _fail(str(e))
    shard_info = None
    if args.shard is not None or args.shard_costs is not None:
        try:
            if args.shard is None:
                raise ShardError("--shard-costs needs --shard K/N")
            plan, shard_info = shard_plan(plan, parse_shard(args.shard), read_costs(args.shard_costs))
        except ShardError as e:
            return _fail(str(e))
        shard_info["shard_costs"] = args.shard_costs
    if args.list:
        try:
            sys.stdout.write("".join(c.cell_id + "\n" for c in plan.cells))
            sys.stdout.flush()
        except BrokenPipeError:  # `--list | head`: the reader is gone, which is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    problem = _run_args_problem(args)
    if problem:
        return _fail(problem)
    if args.baseline is not None and not (Path(args.baseline) / "results.jsonl").is_file():
        return _fail(f"--baseline {args.baseline!r} has no results.jsonl (a directory written by "
                     f"`python -m harness run`, e.g. reports/baseline)")
    t0 = time.perf_counter()
    try:
        summary, keys = run_plan(plan, _run_options(args, timeouts, shard_info), finalists=finalists)
    except (RunError, ModelInputError, InputError) as e:  # every model's CheckpointError/InputContractError
        return _fail(str(e))
    return _report_run(args, plan, summary, keys, time.perf_counter() - t0, shard_info)


def _sized_to_src(plan, src: Optional[str]):
    """With ``--src``, every cell's resolution is the real input size (cell ids name it; ``--pad``:
    ``padded_to`` in the record says the rest); an unreadable file is named later by load_user_pair."""
    if not (src and Path(src).is_file()):
        return plan
    import dataclasses

    try:
        hw = image_size(src)
    except (OSError, ValueError):
        return plan
    seen: dict = {}
    for c in plan.cells:
        seen.setdefault(dataclasses.replace(c, resolution=hw), None)
    return dataclasses.replace(plan, cells=tuple(seen))


def _run_args_problem(args: argparse.Namespace) -> Optional[str]:
    if args.checkpoint is not None and Path(args.checkpoint).is_dir():
        return f"--checkpoint {args.checkpoint!r} is a directory; give the .pth file inside it"
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        return f"--checkpoint {args.checkpoint!r}: no such file"
    if args.deadline is not None and args.deadline <= 0:
        return f"--deadline {args.deadline:g}: must be > 0 seconds"
    return None


def _run_options(args: argparse.Namespace, timeouts: Dict[str, float], shard_info: Optional[dict] = None):
    return RunOptions(
        out_dir=Path(args.out), checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        src=args.src, bgr=args.bgr, pad=args.pad, progress=not args.no_progress, config_path=args.config,
        jobs=args.jobs or usable_cores(), cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        no_cache=args.no_cache, stage_timeout_s=timeouts, deadline_s=args.deadline,
        memory_limit_mib=args.memory_limit_mib, resume=bool(args.resume), rerun_failed=bool(args.rerun_failed),
        filter_expr=args.filter, shard_info=shard_info,
    )


def _report_run(args: argparse.Namespace, plan, summary, keys, wall_s: float, shard_info: Optional[dict] = None) -> int:
    """Write the report of a finished (or interrupted) run and choose the exit code."""
    meta = {
        "profile": plan.profile, "config": str(args.config), "filter": args.filter,
        "settings": plan.settings.model_dump(),
        "tolerances": {k: v.model_dump() for k, v in plan.tolerances.items()},
        "limits": plan.limits.model_dump(), "weights": keys.weights_info,
        "inputs": args.src and {"src": args.src, "bgr": args.bgr, "pad": args.pad,
                                "conversion": keys.input_conversion}
        or {"samples": list(plan.samples)},
        "wall_s": wall_s, "run_wall_s": summary.wall_s, "stage_s": summary.stage_s, "jobs": summary.jobs,
        "worker_threads": keys.threads, "cache": summary.cache, "interrupted": summary.interrupted,
        "counts": summary.counts(),
        "rules": {r.id: {"reason": r.reason, "evidence": r.evidence, "machine": r.machine_conditioned}
                  for r in plan.rules},
        **(shard_info or {}),
    }
    if summary.rounds:
        write_rounds(Path(args.out), summary.rounds)
        meta["latency_rounds"] = {
            "groups": len(summary.rounds), "seconds": round(sum(g.seconds for g in summary.rounds if not g.cached), 1),
            "cached": sum(g.cached for g in summary.rounds),
            "stops": {s: sum(g.stop == s for g in summary.rounds) for s in sorted({g.stop for g in summary.rounds})},
            "spread": spreads_dict(between_run_spread(summary.rounds)),
        }
    elif (Path(args.out) / ROUNDS_FILE).exists() and not args.resume:
        (Path(args.out) / ROUNDS_FILE).unlink()  # an earlier run's rounds would describe other records
    out = Path(args.out)
    res = None
    try:
        if args.baseline is not None and not (summary.interrupted or summary.stopped_by):
            # the diff first: the report shows it ("changed since baseline")
            write_environment(out, meta)
            res = diff_dirs(Path(args.baseline), out)
            dpaths = write_diff(res, out)
        else:  # a diff of an earlier run in OUT does not describe this one
            for name in ("diff.md", "diff.html", "diff.json"):
                (out / name).unlink(missing_ok=True)
        paths = write_report(out, summary.records, None if res is not None else meta)
    except OSError as e:
        return _fail(f"could not write the report to {args.out!r}: {e.strerror or e}; "
                     f"{len(summary.records)} records are in results.jsonl (`python -m harness report {args.out}`)")
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts().items()))
    c = summary.cache
    print(f"{len(summary.records)} cells in {wall_s:.1f} s ({counts}); {c.get('cells_run', 0) + c.get('result_hits', 0)} "
          f"cells run ({c.get('result_hits', 0)} from the result cache), {summary.kept} kept")
    print(f"report: {paths['html']}")
    if summary.stopped_by:
        return _fail(summary.stopped_by)
    if summary.interrupted:
        print(f"interrupted by {summary.interrupted}: {len(summary.records)} of {len(plan.cells)} cells finished; "
              f"continue with: python -m harness run --resume {args.out}", file=sys.stderr)
        return 130 if summary.interrupted == "SIGINT" else 143
    code = 1 if summary.unexpected else 0
    if summary.unexpected:
        print(f"{summary.unexpected} unexpected result(s): see {paths['md']} (junit: {paths['junit']})",
              file=sys.stderr)
    if res is not None:
        sys.stdout.write(to_markdown(res))
        print(f"diff against {args.baseline}: {dpaths['html']}")
        code = max(code, 1 if res.regression else 0)
    return 0 if args.exit_zero else code


def cmd_report(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    if not (d / "results.jsonl").is_file():
        return _fail(f"{str(d)!r} has no results.jsonl (run `python -m harness run --out {args.dir}` first)")
    try:
        records = read_records(d / "results.jsonl")
    except ValueError as e:
        return _fail(str(e))
    if args.benchmark_json is not None and not Path(args.benchmark_json).is_file():
        return _fail(f"--benchmark-json {args.benchmark_json!r}: no such file")
    try:
        paths = write_report(d, records, benchmark_json=Path(args.benchmark_json) if args.benchmark_json else None)
    except ValueError as e:
        return _fail(str(e))
    print(f"{len(records)} cells; report: {paths['html']}")
    return 1 if any(r["status"] in UNEXPECTED_STATUSES for r in records) else 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "merge":
        return cmd_merge(args)
    if args.command == "diff":
        return cmd_diff(args)
    if args.command == "verify":
        return run_verify(args)
    return cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
