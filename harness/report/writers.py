"""The report's files: ``results.csv`` (pandas), ``report.html`` (jinja2, self-contained), ``summary.md``,
``junit.xml`` and ``environment.json``. :func:`write_report` rebuilds all of them from ``results.jsonl``
alone; the models' own content comes from their adapters (:meth:`harness.models.ModelAdapter.report_sections`,
:meth:`~harness.models.ModelAdapter.report_findings`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..benchmark import cpu_flags, cpu_name
from ..cache import package_versions
from ..decide import decide, failure_groups
from ..diff import DiffResult, records_fingerprint
from ..models import MODELS, ReportSection, record_owner
from ..rounds import read_rounds
from ..runs import read_records
from ..system import describe
from .figures import MIN_SCATTER_CELLS, plots, section_figures
from .findings import findings as all_findings
from .markdown import summary_md
from .tables import (COLUMN_LABELS, FILTER_COLUMNS, HIDDEN_COLUMNS, PASSED, READINESS_TARGETS, STATUS_ORDER, cell_details,
                     contract_rows, csv_columns, csv_frame_rows, facts, fmt, grid, readiness_rows, strip_paths,
                     nobreak, table_columns, table_rows, target_tables, url_parts)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"  # harness/templates


def _git_commit() -> Optional[str]:
    """HEAD of the harness's git checkout, or None outside one."""
    try:
        root = Path(__file__).resolve().parent.parent.parent
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip() or None
    except Exception:  # noqa: BLE001 - not a git checkout
        return None


def environment(extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Versions and hardware for ``environment.json`` (``extra``: the run's metadata, added last)."""
    versions = package_versions()
    torch = sys.modules.get("torch")  # only when this process already uses it (a warm run need not)
    env: Dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{k: versions.get(k) for k in ("torch", "torchvision", "onnx", "onnxruntime", "onnxsim", "onnxscript")},
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "packages": package_versions(),
        "cpu_count": os.cpu_count(),
        "system": describe(),
        "cuda": (torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None),
        "git_commit": _git_commit(),
    }
    if extra:
        env.update(extra)
    return env


def write_environment(out_dir: Path, meta: Dict[str, Any]) -> Path:
    """``out_dir/environment.json``: :func:`environment` with the run's metadata ``meta``. Returns its path;
    raises OSError where ``out_dir`` is not writable."""
    path = Path(out_dir) / "environment.json"
    path.write_text(json.dumps(environment(meta), indent=2, default=str))
    return path


def read_benchmark_json(path: Path) -> List[Dict[str, Any]]:
    """Rows from a pytest-benchmark JSON file (``--benchmark-json``): name, cell, stats in ms, machine.

    Raises:
        ValueError: the file is not pytest-benchmark JSON (names the file).
    """
    try:
        data = json.loads(Path(path).read_text())
        machine = data["machine_info"]
        benches = data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file ({type(e).__name__}: {e})") from None
    rows = []
    for b in benches:
        st = b["stats"]
        rows.append({
            "name": b.get("name"), "cell_id": (b.get("extra_info") or {}).get("cell_id", b.get("param")),
            "median_ms": st["median"] * 1e3, "mean_ms": st["mean"] * 1e3, "stddev_ms": st["stddev"] * 1e3,
            "min_ms": st["min"] * 1e3, "max_ms": st["max"] * 1e3, "rounds": st["rounds"],
            "ops": st.get("ops"), "cpu": (machine.get("cpu") or {}).get("brand_raw"),
            "datetime": data.get("datetime"),
        })
    return rows


def status_counts(records: List[Dict[str, Any]]) -> Dict[str, int]:
    """``{status: cells}`` in :data:`STATUS_ORDER` (every status, zeros included), then any other status."""
    counts = {s: 0 for s in STATUS_ORDER}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def sections(records: List[Dict[str, Any]]) -> List[ReportSection]:
    """The registered models' own report sections (:meth:`~harness.models.ModelAdapter.report_sections`),
    in registry order."""
    return [s for a in MODELS.values() for s in a.report_sections(records)]


def write_report(out_dir: Path, records: Optional[List[Dict[str, Any]]] = None,
                 meta: Optional[Dict[str, Any]] = None, benchmark_json: Optional[Path] = None) -> Dict[str, Path]:
    """Write results.csv, report.html, summary.md, junit.xml (and environment.json when ``meta`` is given;
    benchmark.csv with ``benchmark_json``).

    ``records`` default to those read from ``out_dir/results.jsonl``. A ``diff.json`` in ``out_dir`` written
    by a comparison of these very records with a baseline (:func:`diff_summary`) becomes the page's "changed
    since baseline" box. Returns ``{csv, html, md, junit}`` paths. Raises OSError where ``out_dir`` is not writable, ValueError for an unreadable results.jsonl or
    benchmark JSON.
    """
    out_dir = Path(out_dir)
    if records is None:
        records = read_records(out_dir / "results.jsonl")
    env_path = out_dir / "environment.json"
    if meta is not None:
        write_environment(out_dir, meta)
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    write_csv(out_dir / "results.csv", records)
    counts = status_counts(records)
    found = all_findings(records)
    decisions = decide(records, env, read_rounds(out_dir))
    _write_html(out_dir, records, env, counts, found, benchmark_json, decisions)
    (out_dir / "summary.md").write_text(summary_md(records, env, counts, found, decisions), encoding="utf-8")
    write_junit(out_dir / "junit.xml", records, env)
    return {k: out_dir / v for k, v in (("csv", "results.csv"), ("html", "report.html"), ("md", "summary.md"),
                                        ("junit", "junit.xml"))}


def write_junit(path: Path, records: List[Dict[str, Any]], env: Optional[Dict[str, Any]] = None) -> None:
    """JUnit XML, one ``testcase`` per cell (``classname`` = model.runtime.precision, the model of a record
    without one being its owner in the registry; ``name`` = cell id, ``time`` = the cell's seconds), mapped as
    pytest's junitxml does: ``fail`` and ``xpass`` -> ``failure`` (xpass as a strict xfail: the rule no longer
    holds), ``error``/``crash``/``timeout`` -> ``error``, ``skip`` -> ``skipped``, ``xfail`` -> ``skipped``
    with ``type="xfail"``; the reason is the message."""
    env = env or {}
    n = {k: 0 for k in ("failures", "errors", "skipped")}
    suite = ET.Element("testsuite", name=f"matting-export-matrix.{env.get('profile', 'run')}")
    total = 0.0
    for r in records:
        st = r.get("status")
        t = float(r.get("cell_s") or 0.0)
        total += t
        model = r.get("model") or record_owner(r).name
        tc = ET.SubElement(suite, "testcase", classname=f"{model}.{r.get('runtime')}.{r.get('precision')}",
                           name=str(r.get("cell_id")), time=f"{t:.3f}")
        reason = str(r.get("reason") or "")
        if st in ("fail", "xpass"):
            n["failures"] += 1
            ET.SubElement(tc, "failure", message=reason[:500], type=st).text = (
                f"{st} at stage {r.get('stage')}: {reason}\n{r.get('parity') or r.get('parity_note') or ''}")
        elif st in ("error", "crash", "timeout"):
            n["errors"] += 1
            ET.SubElement(tc, "error", message=reason[:500], type=st).text = f"{st} at stage {r.get('stage')}: {reason}"
        elif st in ("skip", "xfail"):
            n["skipped"] += 1
            ET.SubElement(tc, "skipped", message=reason[:500], type="xfail" if st == "xfail" else "skip")
    suite.set("tests", str(len(records)))
    for k, v in n.items():
        suite.set(k, str(v))
    suite.set("time", f"{total:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_csv(path: Path, records: List[Dict[str, Any]]) -> None:
    """results.csv (pandas): one row per record, the columns of :func:`~harness.report.tables.csv_columns`."""
    import pandas as pd  # ~0.3 s to import: a run that stops on bad input never writes a report

    pd.DataFrame(csv_frame_rows(records), columns=csv_columns(records)).to_csv(path, index=False)


def _script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as ``\\u`` escapes (no ``</script>``,
    no ``<!--`` can end or confuse the element)."""
    return (json.dumps(obj, separators=(",", ":"), default=str)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _slug(*parts: Any) -> str:
    """An HTML id fragment from ``parts`` (letters, digits, ``_ . -``; anything else becomes ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(str(p) for p in parts)).strip("-")


def pick_anchor(d: Any) -> str:
    """The HTML id of a decision's card: ``pick-<model>-<runtime>-<precision>`` (and the shape for a decision
    at a secondary comparison shape)."""
    return "pick-" + _slug(d.model, d.runtime, d.precision, *(() if d.primary else (d.shape_label,)))


def pick_groups(decisions: List[Any]) -> List[Dict[str, Any]]:
    """The primary decisions per model, in the decisions' order: ``[{model, label, shape, picks}]`` with
    ``shape`` the comparison shape they share (``""`` when they differ: each card then names its own)."""
    out: Dict[str, Dict[str, Any]] = {}
    for d in decisions:
        if not d.primary:
            continue
        a = MODELS.get(d.model)
        g = out.setdefault(d.model, {"model": d.model, "label": a.display_name if a else d.model, "picks": []})
        g["picks"].append(d)
    for g in out.values():
        shapes = {d.shape_label for d in g["picks"]}
        g["shape"] = shapes.pop() if len(shapes) == 1 else ""
    return list(out.values())


def picked_cells(decisions: List[Any]) -> Dict[str, List[List[str]]]:
    """``{cell id: [[card id, "model runtime precision"], ...]}``: the cells some decision recommends (the
    'All cells' row links back to its card)."""
    out: Dict[str, List[List[str]]] = {}
    for d in decisions:
        if d.recommended is not None:
            text = f"{d.model} {d.runtime} {d.precision}" + ("" if d.primary else f" at {d.shape_label}")
            out.setdefault(d.recommended.cell_id, []).append([pick_anchor(d), text])
    return out


def diff_summary(out_dir: Path, records: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The "changed since baseline" box: ``out_dir/diff.json`` (written by ``harness run --baseline`` or
    ``harness diff BASE OUT``) when its ``new_fingerprint`` is that of ``records`` (a diff of an earlier run
    in the same folder is not shown), else None. ``{base, regression, counts: [(title, n)], latency_note,
    compared_latency, examples: [(title, [cell ids])], html}`` (``html``: diff.html exists beside it)."""
    path = Path(out_dir) / "diff.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("new_fingerprint") != records_fingerprint(records):
        return None
    titles = dict(DiffResult.SECTIONS)
    counts = [(titles.get(k, k), n) for k, n in (data.get("counts") or {}).items() if n]
    examples = [(titles[k], [str(c.get("cell_id")) for c in (data.get(k) or [])[:5]])
                for k, _ in DiffResult.SECTIONS if data.get(k) and k in DiffResult.REGRESSIONS + ("fixed",)]
    return {"base": strip_paths(data.get("base", "")), "regression": bool(data.get("regression")), "counts": counts,
            "latency_note": data.get("latency_note") or "", "compared_latency": data.get("compared_latency", 0),
            "examples": examples, "html": (Path(out_dir) / "diff.html").is_file()}


def _table_json(records: List[Dict[str, Any]], env: Dict[str, Any], out_dir: Optional[Path],
                decisions: Optional[List[Any]] = None) -> str:
    """The 'All cells' data, once: column names (those of ``hidden`` are searched and filtered, not drawn),
    one array of display strings per cell, the filterable columns, the inspector's details per cell id and the cards that recommend a cell (the page
    renders the table from it)."""
    cols = table_columns(records)
    rows = table_rows(records, cols)
    return _script_json({"cols": cols, "hidden": HIDDEN_COLUMNS, "rows": [[r[c] for c in cols] for r in rows],
                         "filters": FILTER_COLUMNS,
                         "details": cell_details(records, env, out_dir), "picks": picked_cells(decisions or [])})


def _write_html(out_dir: Path, records: List[Dict[str, Any]], env: Dict[str, Any], counts: Dict[str, int],
                findings: List[str], benchmark_json: Optional[Path], decisions: Optional[List[Any]] = None) -> None:
    """report.html from harness/templates/report.html.j2 (and benchmark.csv beside it with ``benchmark_json``)."""
    import jinja2  # the report's HTML only
    import pandas as pd

    tmpl = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    ).get_template("report.html.j2")
    bench_rows = read_benchmark_json(benchmark_json) if benchmark_json else []
    if bench_rows:
        pd.DataFrame(bench_rows).to_csv(out_dir / "benchmark.csv", index=False)
    own = sections(records)
    decisions = decisions or []
    causes = [dict(g, reason=strip_paths(g.get("reason"))) for g in failure_groups(records, env)]
    cols = table_columns(records)
    html = tmpl.render(
        decisions=decisions, pick_groups=pick_groups(decisions), pick_anchor=pick_anchor, facts=facts,
        strip_paths=strip_paths, url_parts=url_parts, nobreak=nobreak, passed=PASSED, causes=causes, table_json=_table_json(records, env, out_dir, decisions),
        p50_of={r["cell_id"]: r.get("p50_ms") for r in records}, diff=diff_summary(out_dir, records),
        env=env, counts=counts, grids=grid(records), table_cols=[c for c in cols if c not in HIDDEN_COLUMNS],
        col_labels=COLUMN_LABELS,
        fmt=fmt, findings=findings, total=len(records), skipped=counts.get("skip", 0),
        plots=plots(records, env), min_scatter=MIN_SCATTER_CELLS, bench_rows=bench_rows, benchmark_json=str(benchmark_json or ""),
        readiness=readiness_rows(records), targets=READINESS_TARGETS, target_tables=target_tables(records),
        contract=contract_rows(records), sections=own, section_figures=section_figures(own),
    )
    (out_dir / "report.html").write_text(html, encoding="utf-8")
