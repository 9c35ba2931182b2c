"""summary.md: counts, unexpected results by cause, the decision table, findings, per-target rows and the
input-contract table, as Markdown lines."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from ..decide import failure_groups
from ..runs import UNEXPECTED_STATUSES
from .tables import contract_rows, target_rows


def _md_cell(text: Any) -> str:
    """``text`` on one line with ``|`` escaped (a Markdown table cell; None is empty)."""
    return " ".join(str(text if text is not None else "").split()).replace("|", "\\|")


def decision_md(decisions: List[Any], env: Dict[str, Any]) -> List[str]:
    """The "what to ship" table (primary comparison shape per target, :func:`harness.decide.decide`'s
    decisions) as Markdown lines; p50 in ms with its 95 % CI, judged max abs error with its atol."""
    md = ["", "## What to ship, per target", "",
          "Choice rule: parity gates (status pass), then p50 differences whose 95 % bootstrap CI clears 5 %; "
          "ties go to the more portable artifact (more runtimes passing the same file, fewer data-dependent ops); "
          "a tied input-guarded twin of a config goes ahead of it when the probes show it safer. "
          "p50 is end-to-end wall time per call (see the report's latency definitions).", "",
          "| model | target | shape | recommended config | p50 ms (95 % CI) | judged max abs (atol) | runner-up: why it lost |",
          "|---|---|---|---|---|---|---|"]
    for d in decisions:
        if not d.primary:
            continue
        if d.recommended is None:
            causes = "; ".join(f"{g['count']} × {g['cause']}" + (f" ([evidence]({g['evidence']}))" if g["evidence"] else "")
                               for g in d.blocked[:3])
            md.append(f"| {d.model} | {d.target} | {d.shape_label} | **blocked**: nothing passes ({d.ran} ran) | | | "
                      f"{_md_cell(causes)} |")
            continue
        c = d.recommended
        p50 = f"{c.p50_ms:.1f}" if c.p50_ms is not None else "not timed"
        if c.p50_ci:
            p50 += f" ({c.p50_ci[0]:.1f}–{c.p50_ci[1]:.1f})"
        acc = d.accuracy
        known = acc.get("max_abs") is not None and math.isfinite(acc["max_abs"])  # NaN: no error to show
        err = f"{acc['max_abs']:.1e} ({acc['atol']:g})" if known and acc.get("atol") else ""
        ru = f"{d.runner_up.label}: {d.why_runner_up_lost}" if d.runner_up else "only passing config"
        md.append(f"| {d.model} | {d.target} | {d.shape_label} | {_md_cell(c.label)} | {p50} | {err} | {_md_cell(ru)} |")
    return md + notes_md(decisions)


def notes_md(decisions: List[Any]) -> List[str]:
    """The picks' safety notes (:attr:`harness.decide.Decision.notes`) of the primary shapes, one bullet per
    note under its target (its detail, when it has one, a nested bullet), as Markdown lines; none when no pick
    has a note."""
    with_notes = [d for d in decisions if d.primary and d.recommended is not None and d.notes]
    if not with_notes:
        return []
    md = ["", "### Safety notes on the picks", ""]
    for d in with_notes:
        md.append(f"**{d.model} {d.target}** (`{d.recommended.cell_id}`)")
        md.append("")
        for n in d.notes:
            md.append(f"- **{n.label}**: {_md_cell(n.text)}")
            if n.detail:
                md.append(f"  - {_md_cell(n.detail)}")
        md.append("")
    return md[:-1]


def unexpected_md(records: List[Dict[str, Any]], env: Dict[str, Any]) -> List[str]:
    """Unexpected results grouped by cause (never 100 near-identical rows); no lines when there are none."""
    bad = [r for r in records if r["status"] in UNEXPECTED_STATUSES]
    if not bad:
        return []
    md = ["", f"## Unexpected results ({len(bad)})", "", "| cause | cells | example | reason |", "|---|---|---|---|"]
    for g in failure_groups(bad, env)[:30]:
        md.append(f"| {_md_cell(g['cause'])} | {g['count']} | `{g['example']}` | {_md_cell(g['reason'])[:200]} |")
    return md


def summary_md(records: List[Dict[str, Any]], env: Dict[str, Any], counts: Dict[str, int], findings: List[str],
               decisions: Optional[List[Any]] = None) -> str:
    """The whole of summary.md: ``counts`` (``{status: n}``), ``findings`` (one bullet each), the decisions'
    table, unexpected results, per-target rows and the input-contract table."""
    md = [f"# Export matrix summary — profile `{env.get('profile', '?')}`", ""]
    md.append(f"{len(records)} cells · " + " · ".join(f"{s}: {n}" for s, n in counts.items() if n))
    if env.get("wall_s") is not None:
        md.append(f"\nWall time: {env['wall_s']:.1f} s on {env.get('cpu', '?')} (torch {env.get('torch')}, "
                  f"onnxruntime {env.get('onnxruntime')})")
    md += unexpected_md(records, env)
    if decisions:
        md += decision_md(decisions, env)
    if findings:
        md += ["", "## Findings", ""] + [f"- {f}" for f in findings]
    md += ["", "## Per target (model x runtime x exporter x precision, per resolution and batch)", "",
           "| model | runtime | exporter | precision | shape | passing / ran | skipped | crop | replace | mode | opset | "
           "fastest p50 per mode, ms | not passing |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in target_rows(records):
        p50 = t.get("p50_best", "")
        md.append(f"| {_md_cell(t['model'])} | {_md_cell(t['runtime'])} | {_md_cell(t['exporter'])} "
                  f"| {_md_cell(t['precision'])} | {_md_cell(t['shape'])} | {t['passing']}/{t['ran']} | {t['skipped']} "
                  f"| {t.get('crop_method', '')} | {t.get('replace_method', '')} | {t.get('refine_mode', '')} "
                  f"| {t.get('opset', '')} | {p50} | {_md_cell(t['not_passing'] or t.get('skip_reason', ''))} |")
    contract = contract_rows(records)
    if contract:
        md += ["", "## Input contract (what each artifact does with inputs the model must not take)", "",
               "| target | runtime | cells | size (H,W not multiples of 4) | dtype | channels (RGBA) | range (0-255) |",
               "|---|---|---|---|---|---|---|"]
        for c in contract:
            md.append(f"| {c['target']} | {c['runtime']} | {c['cells']} | {c['size']} | {c['dtype']} | {c['channels']} "
                      f"| {c['range']} |")
    return "\n".join(md) + "\n"
