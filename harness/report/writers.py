"""The report's files: ``results.csv`` (pandas), ``report.html`` (jinja2, self-contained), ``summary.md``,
``junit.xml`` and ``environment.json``. :func:`write_report` rebuilds all of them from ``results.jsonl``
alone; the models' own content comes from their adapters (:meth:`harness.models.ModelAdapter.report_sections`,
:meth:`~harness.models.ModelAdapter.report_findings`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..benchmark import cpu_flags, cpu_name
from ..cache import package_versions
from ..decide import decide, failure_groups
from ..models import MODELS, ReportSection, record_owner
from ..rounds import read_rounds
from ..runs import read_records
from ..system import describe
from .figures import plots, section_figures
from .findings import findings as all_findings
from .markdown import summary_md
from .tables import (FILTER_COLUMNS, READINESS_TARGETS, STATUS_ORDER, TABLE_COLUMNS, cell_details, contract_rows,
                     csv_columns, fmt, grid, readiness_rows, table_rows, target_rows)

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

    ``records`` default to those read from ``out_dir/results.jsonl``. Returns ``{csv, html, md, junit}``
    paths. Raises OSError where ``out_dir`` is not writable, ValueError for an unreadable results.jsonl or
    benchmark JSON.
    """
    out_dir = Path(out_dir)
    if records is None:
        records = read_records(out_dir / "results.jsonl")
    env_path = out_dir / "environment.json"
    if meta is not None:
        env_path.write_text(json.dumps(environment(meta), indent=2, default=str))
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

    pd.DataFrame(records, columns=csv_columns(records)).to_csv(path, index=False)


def _script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as ``\\u`` escapes (no ``</script>``,
    no ``<!--`` can end or confuse the element)."""
    return (json.dumps(obj, separators=(",", ":"), default=str)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _table_json(records: List[Dict[str, Any]], env: Dict[str, Any], out_dir: Optional[Path]) -> str:
    """The 'All cells' data, once: column names, one array of display strings per cell, the filterable
    columns, and the inspector's details per cell id (the page renders the table from it)."""
    rows = table_rows(records)
    return _script_json({"cols": TABLE_COLUMNS, "rows": [[r[c] for c in TABLE_COLUMNS] for r in rows],
                         "filters": FILTER_COLUMNS, "details": cell_details(records, env, out_dir)})


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
    html = tmpl.render(
        decisions=decisions or [], causes=failure_groups(records, env), table_json=_table_json(records, env, out_dir),
        p50_of={r["cell_id"]: r.get("p50_ms") for r in records},
        env=env, counts=counts, grids=grid(records), table_cols=TABLE_COLUMNS,
        fmt=fmt, findings=findings, total=len(records),
        plots=plots(records, env), bench_rows=bench_rows, benchmark_json=str(benchmark_json or ""),
        readiness=readiness_rows(records), targets=READINESS_TARGETS, target_rows=target_rows(records),
        contract=contract_rows(records), sections=own, section_figures=section_figures(own),
    )
    (out_dir / "report.html").write_text(html, encoding="utf-8")
