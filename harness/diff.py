"""``python -m harness diff BASE_DIR NEW_DIR``: what changed between two runs, and whether it is a regression.

Cells are matched by ``cell_id``. Classes of change (:class:`DiffResult`):

- ``new_failures``: a cell that is now ``fail``/``error``/``crash``/``timeout`` and was not (or is new);
- ``lost``: a cell that passed in BASE and now is ``xfail`` (a rule now covers a failure: the target lost a
  working configuration, although the run itself is green). When the rule is conditioned on the machine
  (``env``/``runtime_info`` in matrix.yaml, e.g. OpenVINO fp16 running bf16 on CPUs without AVX512-FP16) and
  the two runs are on different machines, it is a ``flip`` with that explanation, not a regression;
- ``new_xpass``: ``xpass`` now and not before (a rule that predicts a failure no longer holds: stale rule);
- ``fixed``: unexpected or ``xfail`` before, ``pass`` now;
- ``flips``: every other status change (e.g. ``pass`` -> ``skip`` on a machine without the runtime);
- ``added``/``removed``: cells only in NEW / only in BASE;
- ``slower``/``faster``: cells that pass in both with per-call latency samples, where the p50 ratio's 95 %
  bootstrap confidence interval (:func:`harness.decide.p50_ratio_ci`) lies wholly above ``1 + min_effect``
  (below ``1 - min_effect``). ``min_effect`` defaults to 0.10: this project's CI VMs show run-to-run p50
  changes up to ~10 % without a code change, and the README's measurements flag cv > 0.1 as unstable.
  Latency is compared only when both runs describe the same machine (CPU model, core count, worker
  threads); otherwise the result says why it was not compared (``latency_note``) instead of guessing.
  Where a run measured its **between-run spread** (``environment.json`` ``latency_rounds.spread``: each
  decision's finalists timed twice in the run, burst and interleaved rounds, :mod:`harness.rounds`), a cell
  is slower only when *also* ``new/base`` clears ``1 + min_effect`` with a 95 % interval widened by both
  runs' spread for that runtime (:func:`harness.rounds.slower_claim`): the burst interval measures a few
  consecutive calls, and an A/A run (the same commit twice on a 2-core VM) showed p50 ratios of 0.70-1.43
  with burst intervals a few percent wide (issue 29).

A regression (exit code 1) is any of new_failures, lost, new_xpass or slower. ``harness run --baseline DIR``
runs the same comparison after the run and writes ``diff.md``/``diff.html``/``diff.json`` next to the report;
``diff.json`` names the records it compared (``new_fingerprint``, :func:`records_fingerprint`), so the
report shows it as its "changed since baseline" box only for those very records.
Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .decide import _samples, p50_ratio_ci
from .rounds import Spread, slower_claim, spread_for, spreads_from_dict
from .runs import read_records

BAD = ("fail", "error", "crash", "timeout")
MIN_EFFECT = 0.10


def records_fingerprint(records: List[Dict[str, Any]]) -> str:
    """16 hex digits identifying a run's outcome: SHA-256 of its sorted ``cell_id``/``status`` pairs (the
    same records in any order give the same value; one more cell or one changed status another)."""
    lines = sorted(f"{r.get('cell_id')}\t{r.get('status')}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


@dataclass
class Change:
    """One cell's change: ``cell_id``, statuses before/after, a one-line ``detail`` (reason or latency)."""

    cell_id: str
    before: Optional[str]
    after: Optional[str]
    detail: str = ""
    ratio: Optional[float] = None
    lo: Optional[float] = None
    hi: Optional[float] = None


@dataclass
class DiffResult:
    """The comparison of two runs (see the module docstring for the classes)."""

    base: str
    new: str
    new_failures: List[Change] = field(default_factory=list)
    lost: List[Change] = field(default_factory=list)
    new_xpass: List[Change] = field(default_factory=list)
    fixed: List[Change] = field(default_factory=list)
    flips: List[Change] = field(default_factory=list)
    added: List[Change] = field(default_factory=list)
    removed: List[Change] = field(default_factory=list)
    slower: List[Change] = field(default_factory=list)
    faster: List[Change] = field(default_factory=list)
    compared_latency: int = 0
    latency_note: str = ""
    same_cells: int = 0
    min_effect: float = MIN_EFFECT
    spread_note: str = ""  # how the between-run spread entered the latency test
    noise: int = 0  # cells the burst interval called slower/faster, inside the between-run spread
    new_fingerprint: str = ""  # records_fingerprint of NEW's records

    REGRESSIONS = ("new_failures", "lost", "new_xpass", "slower")
    SECTIONS = (("new_failures", "New failures"), ("lost", "Lost (passed before, a rule now expects failure)"),
                ("new_xpass", "New xpass (stale rules)"), ("slower", "Slower (significant)"),
                ("fixed", "Fixed"), ("faster", "Faster (significant)"), ("flips", "Other status changes"),
                ("added", "Added cells"), ("removed", "Removed cells"))

    @property
    def regression(self) -> bool:
        return any(getattr(self, k) for k in self.REGRESSIONS)

    def counts(self) -> Dict[str, int]:
        return {k: len(getattr(self, k)) for k, _ in self.SECTIONS}


def _short(reason: Any, n: int = 160) -> str:
    s = " ".join(str(reason or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


def same_machine(base_env: Dict[str, Any], new_env: Dict[str, Any]) -> Tuple[bool, str]:
    """Whether latencies of the two runs are comparable: same CPU model, core count and worker threads
    (``environment.json``). Returns ``(ok, why_not)``."""
    for key in ("cpu", "cpu_count", "worker_threads", "jobs"):
        a, b = base_env.get(key), new_env.get(key)
        if a != b:
            return False, f"latency not compared: {key} differs ({a!r} in BASE, {b!r} in NEW)"
    return True, ""


def diff_records(base: List[Dict[str, Any]], new: List[Dict[str, Any]], base_env: Optional[Dict[str, Any]] = None,
                 new_env: Optional[Dict[str, Any]] = None, min_effect: float = MIN_EFFECT,
                 latency: str = "same-machine", base_name: str = "BASE", new_name: str = "NEW") -> DiffResult:
    """Compare two runs' records (lists of results.jsonl dicts).

    ``latency``: ``same-machine`` (compare only when :func:`same_machine`), ``always`` or ``never``.
    ``min_effect``: relative p50 change below which a difference is never a regression (0.10 = 10 %).
    """
    if latency not in ("same-machine", "always", "never"):
        raise ValueError(f"latency={latency!r}: expected 'same-machine', 'always' or 'never'")
    res = DiffResult(base=base_name, new=new_name, min_effect=min_effect, new_fingerprint=records_fingerprint(new))
    b = {r["cell_id"]: r for r in base}
    n = {r["cell_id"]: r for r in new}
    machine_ok, machine_why = same_machine(base_env or {}, new_env or {})
    sb = spreads_from_dict(((base_env or {}).get("latency_rounds") or {}).get("spread"))
    sn = spreads_from_dict(((new_env or {}).get("latency_rounds") or {}).get("spread"))
    spreads = (sb or sn, sn or sb)
    res.spread_note = ("between-run spread from " + " and ".join(
        x for x, y in (("BASE", sb), ("NEW", sn)) if y) + "'s rounds") if (sb or sn) else (
        "between-run spread unknown (neither run re-measured finalists in rounds): burst intervals only")
    compare_lat = latency == "always"
    if latency == "same-machine":
        compare_lat, res.latency_note = machine_ok, machine_why
    elif latency == "never":
        res.latency_note = "latency not compared (--latency never)"
    for cid, r in n.items():
        old = b.get(cid)
        st = r.get("status")
        if old is None:
            res.added.append(Change(cid, None, st, _short(r.get("reason"))))
            if st in BAD or st == "xpass":
                (res.new_failures if st in BAD else res.new_xpass).append(Change(cid, None, st, _short(r.get("reason"))))
            continue
        ost = old.get("status")
        if st == ost:
            res.same_cells += 1
            if st == "pass" and compare_lat:
                _latency(res, cid, old, r, min_effect, spreads)
            continue
        ch = Change(cid, ost, st, _short(r.get("reason")))
        if st in BAD:
            res.new_failures.append(ch)
        elif st == "xpass":
            res.new_xpass.append(ch)
        elif ost == "pass" and st == "xfail":
            rule = ((new_env or {}).get("rules") or {}).get(r.get("rule") or "") or {}
            if rule.get("machine") and not machine_ok:
                ch.detail = (f"rule {r.get('rule')} holds on NEW's machine only (it is conditioned on the CPU or "
                             f"on what the runtime did; {machine_why})")
                res.flips.append(ch)
            else:
                res.lost.append(ch)
        elif st == "pass" and (ost in BAD or ost == "xfail" or ost == "xpass"):
            res.fixed.append(ch)
        else:
            res.flips.append(ch)
    for cid, r in b.items():
        if cid not in n:
            res.removed.append(Change(cid, r.get("status"), None))
    return res


def _latency(res: DiffResult, cid: str, old: Dict[str, Any], new: Dict[str, Any], min_effect: float,
             spreads: Tuple[Dict[str, Spread], Dict[str, Spread]] = ({}, {})) -> None:
    a, b = _samples(new), _samples(old)
    if a is None or b is None:
        return
    res.compared_latency += 1
    ratio, lo, hi = p50_ratio_ci(a, b)
    detail = (f"p50 {old.get('p50_ms', 0):.2f} -> {new.get('p50_ms', 0):.2f} ms (x{ratio:.2f}, 95 % CI "
              f"{lo:.2f}–{hi:.2f}; {len(b)} / {len(a)} samples)")
    slower, faster = lo > 1 + min_effect, hi < 1 - min_effect
    rt = str(new.get("runtime"))
    s_base, s_new = spread_for(spreads[0], rt), spread_for(spreads[1], rt)
    if (slower or faster) and (s_base or s_new):
        sig_b, sig_n = (s_base or s_new).sigma, (s_new or s_base).sigma
        bm, nm = float(np.median(b)), float(np.median(a))
        up, slo, shi = slower_claim(bm, nm, sig_b, sig_n, min_effect)
        down = shi < 1 - min_effect
        detail += f"; with the between-run spread of {rt} (sigma {sig_b:.2f}/{sig_n:.2f}): {slo:.2f}–{shi:.2f}"
        if not (up if slower else down):
            res.noise += 1
            return
        lo, hi = (max(lo, slo), hi) if slower else (lo, min(hi, shi))
    if slower:
        res.slower.append(Change(cid, "pass", "pass", detail, ratio, lo, hi))
    elif faster:
        res.faster.append(Change(cid, "pass", "pass", detail, ratio, lo, hi))


def _read(d: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    if not (d / "results.jsonl").is_file():
        raise FileNotFoundError(f"{str(d)!r} has no results.jsonl (a directory written by `python -m harness run`)")
    env_path = d / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    return read_records(d / "results.jsonl"), env


def diff_dirs(base_dir: Path, new_dir: Path, **kw: Any) -> DiffResult:
    """:func:`diff_records` on two run directories. Raises FileNotFoundError naming a directory without
    results.jsonl."""
    base, benv = _read(Path(base_dir))
    new, nenv = _read(Path(new_dir))
    return diff_records(base, new, benv, nenv, base_name=str(base_dir), new_name=str(new_dir), **kw)


def _groups(changes: List[Change]) -> List[Tuple[str, int, Change]]:
    """Changes grouped by (before, after, detail's first words) so that 100 near-identical rows become one."""
    groups: Dict[Tuple[Any, ...], List[Change]] = {}
    for c in changes:
        key = (c.before, c.after, c.detail.split(" (x")[0][:60] if c.ratio is None else "latency")
        groups.setdefault(key, []).append(c)
    return [(f"{k[0]} → {k[1]}", len(v), v[0]) for k, v in groups.items()]


def to_markdown(res: DiffResult, max_rows: int = 20) -> str:
    """Compact Markdown (a CI job summary): counts, then each non-empty class grouped."""
    verdict = "**REGRESSION**" if res.regression else "no regression"
    c = res.counts()
    changed = [f"{title.split(' (')[0].lower()}: {c[k]}" for k, title in res.SECTIONS if c[k]]
    md = [f"## Matrix diff: {verdict}", "",
          " · ".join([f"`{res.base}` → `{res.new}`", f"{res.same_cells} cells unchanged", *changed]), ""]
    md.append(f"Latency compared on {res.compared_latency} passing cells (regression: p50 95 % CI above "
              f"x{1 + res.min_effect:.2f})" + (f"; {res.latency_note}" if res.latency_note else "")
              + (f"; {res.spread_note}" if res.spread_note and res.compared_latency else "")
              + (f"; {res.noise} burst difference(s) inside the between-run spread, not claimed" if res.noise else "")
              + ".")
    for key, title in res.SECTIONS:
        items: List[Change] = getattr(res, key)
        if not items:
            continue
        md += ["", f"### {title} ({len(items)})", ""]
        if key in ("slower", "faster"):
            md += ["| cell | change |", "|---|---|"]
            md += [f"| `{ch.cell_id}` | {ch.detail} |" for ch in sorted(items, key=lambda x: -(x.ratio or 0))[:max_rows]]
        else:
            md += ["| change | cells | example | detail |", "|---|---|---|---|"]
            for label, count, ex in _groups(items)[:max_rows]:
                md.append(f"| {label} | {count} | `{ex.cell_id}` | {ex.detail.replace('|', '/')} |")
        if len(items) > max_rows and key in ("slower", "faster"):
            md.append(f"| … {len(items) - max_rows} more | |")
    return "\n".join(md) + "\n"


def to_html(res: DiffResult) -> str:
    """Self-contained HTML page of the same content (tables per class, full lists)."""
    import jinja2

    tmpl = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    ).get_template("diff.html.j2")
    return tmpl.render(res=res, sections=[(k, t, getattr(res, k)) for k, t in res.SECTIONS], counts=res.counts())


def write(res: DiffResult, out_dir: Path) -> Dict[str, Path]:
    """Write ``diff.md``, ``diff.html`` and ``diff.json`` (counts, cell ids and NEW's
    :func:`records_fingerprint`) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "diff.md", "html": out_dir / "diff.html", "json": out_dir / "diff.json"}
    paths["md"].write_text(to_markdown(res), encoding="utf-8")
    paths["html"].write_text(to_html(res), encoding="utf-8")
    paths["json"].write_text(json.dumps({
        "base": res.base, "new": res.new, "regression": res.regression, "counts": res.counts(),
        "latency_note": res.latency_note, "compared_latency": res.compared_latency, "min_effect": res.min_effect,
        "spread_note": res.spread_note, "noise": res.noise,
        "new_fingerprint": res.new_fingerprint,
        **{k: [vars(c) for c in getattr(res, k)] for k, _ in res.SECTIONS}}, indent=1), encoding="utf-8")
    return paths


def add_parser(sub: Any) -> None:
    p = sub.add_parser("diff", help="compare two run directories; exit 1 on a regression")
    p.add_argument("base", help="baseline run directory (e.g. reports/baseline)")
    p.add_argument("new", help="new run directory (e.g. reports/latest)")
    p.add_argument("--out", default=None, help="where to write diff.md/diff.html/diff.json (default: NEW)")
    p.add_argument("--min-effect", type=float, default=MIN_EFFECT,
                   help="relative p50 change that can count as a latency regression (default 0.10 = 10 %%)")
    p.add_argument("--latency", choices=("same-machine", "always", "never"), default="same-machine",
                   help="compare latency only between runs on the same machine (default), always, or never")


def cmd_diff(args: Any) -> int:
    """Exit 0 (no regression), 1 (regression), 2 (a directory without results)."""
    import sys

    if not 0 <= args.min_effect < 1:
        print(f"error: --min-effect {args.min_effect}: expected a fraction in [0, 1)", file=sys.stderr)
        return 2
    try:
        res = diff_dirs(Path(args.base), Path(args.new), min_effect=args.min_effect, latency=args.latency)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write(res, Path(args.out or args.new))
    sys.stdout.write(to_markdown(res))
    print(f"diff: {paths['html']}")
    return 1 if res.regression else 0
