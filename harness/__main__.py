"""Command line: ``python -m harness run ...`` and ``python -m harness report DIR``.

Exit codes: 0 nothing failed unexpectedly; 1 some cell is ``fail``, ``error`` or ``xpass``;
2 bad config, bad arguments or bad input (nothing is run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "matrix.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m harness", description="BackgroundMattingV2 export-compatibility matrix")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the matrix and write the report")
    r.add_argument("--config", default=str(DEFAULT_CONFIG), help="matrix file (default: %(default)s)")
    r.add_argument("--profile", default=None, help="profile name from the config (default: its default_profile)")
    r.add_argument("--out", default="reports/latest", help="output directory (default: %(default)s)")
    r.add_argument("--filter", default=None,
                   help="comma-separated terms, all must match: key=value[|value] on cell fields "
                        "(e.g. 'exporter=onnx,precision=fp32') or substrings of the cell id")
    r.add_argument("--checkpoint", default=None, help="official BMV2 .pth state_dict (default: calibrated weights)")
    r.add_argument("--src", default=None, help="your own source image (needs --bgr)")
    r.add_argument("--bgr", default=None, help="your own background image (needs --src)")
    r.add_argument("--pad", action="store_true", help="zero-pad --src/--bgr to multiples of 4 instead of rejecting them")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--list", action="store_true", help="print the selected cell ids and exit")
    rep = sub.add_parser("report", help="rebuild report.html/results.csv/summary.md from DIR/results.jsonl")
    rep.add_argument("dir")
    return p


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_run(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointError

    from .config import ConfigError, expand, load_config
    from .inputs import InputError
    from .report import write_report
    from .runner import RunError, RunOptions, run_plan

    try:
        cfg = load_config(args.config)
        plan = expand(cfg, args.profile, args.filter)
    except ConfigError as e:
        return _fail(str(e))
    if args.list:
        for c in plan.cells:
            print(c.cell_id)
        return 0
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        return _fail(f"--checkpoint {args.checkpoint!r}: no such file")
    opts = RunOptions(
        out_dir=Path(args.out), checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        src=args.src, bgr=args.bgr, pad=args.pad, progress=not args.no_progress, config_path=args.config,
    )
    t0 = time.perf_counter()
    try:
        summary, runner = run_plan(plan, opts)
    except (RunError, CheckpointError, InputError) as e:
        return _fail(str(e))
    meta = {
        "profile": plan.profile,
        "config": str(args.config),
        "filter": args.filter,
        "settings": plan.settings.model_dump(),
        "tolerances": {k: v.model_dump() for k, v in plan.tolerances.items()},
        "weights": runner.weights_info,
        "inputs": args.src and {"src": args.src, "bgr": args.bgr, "pad": args.pad} or {"samples": list(plan.samples)},
        "wall_s": time.perf_counter() - t0,
        "counts": summary.counts(),
    }
    paths = write_report(Path(args.out), summary.records, meta)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts().items()))
    print(f"{len(summary.records)} cells in {meta['wall_s']:.1f} s ({counts})")
    print(f"report: {paths['html']}")
    return 1 if summary.unexpected else 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import read_records, write_report

    d = Path(args.dir)
    if not (d / "results.jsonl").is_file():
        return _fail(f"{str(d)!r} has no results.jsonl (run `python -m harness run --out {args.dir}` first)")
    try:
        records = read_records(d / "results.jsonl")
    except ValueError as e:
        return _fail(str(e))
    paths = write_report(d, records)
    print(f"{len(records)} cells; report: {paths['html']}")
    return 1 if any(r["status"] in ("fail", "error", "xpass") for r in records) else 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    return cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
