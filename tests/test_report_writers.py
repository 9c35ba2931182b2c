"""No output stage may crash on what a run recorded: write_report (results.csv, junit.xml, summary.md,
report.html) on degenerate record sets derived from the committed run reports/baseline (real records:
a single cell, only skips, nothing timed, NaN metrics, every status, one model at a time, records without
their optional fields)."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List

import pandas as pd
import pytest

from harness.models import MODELS
from harness.runs import read_records
from harness.report import write_report

BASELINE = Path(__file__).resolve().parent.parent / "reports" / "baseline"
STATUSES = ["pass", "xfail", "skip", "fail", "xpass", "error", "crash", "timeout"]
LATENCY = ("p50_ms", "p90_ms", "p99_ms", "cv", "latency_samples_ms", "p50_ci_ms", "compute_p50_ms", "fps",
           "latency_runs", "latency_stop")
AXES = {n for a in MODELS.values() for n in a.axis_names()}
JUNIT = {"fail": "failure", "xpass": "failure", "error": "error", "crash": "error", "timeout": "error",
         "skip": "skipped", "xfail": "skipped", "pass": None}


@pytest.fixture(scope="module")
def baseline() -> List[Dict[str, Any]]:
    return read_records(BASELINE / "results.jsonl")


def _nan_metrics(r: Dict[str, Any]) -> Dict[str, Any]:
    """Every float field (not the cell's own axes: they are its identity) and float list set to NaN."""
    r = copy.deepcopy(r)
    for k, v in r.items():
        if isinstance(v, float) and k not in AXES:
            r[k] = float("nan")
        elif isinstance(v, list) and v and all(isinstance(x, float) for x in v):
            r[k] = [float("nan")] * len(v)
    return r


def _variants(base: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    timed = [r for r in base if r.get("p50_ms") is not None]
    out = {
        "single": [timed[0]],
        "only-skips": [r for r in base if r["status"] == "skip"],
        "untimed": [{k: (None if k in LATENCY else v) for k, v in r.items()} for r in base],
        "nan-metrics": [_nan_metrics(r) for r in base],
        "every-status": [dict(copy.deepcopy(r), status=STATUSES[i % len(STATUSES)]) for i, r in enumerate(base)],
        "no-optional-fields": [{"cell_id": r["cell_id"], "status": r["status"]} for r in base[::7]],
        "no-model-field": [{k: v for k, v in r.items() if k != "model"} for r in base
                           if r.get("model") in (None, next(iter(MODELS)))][:60],
    }
    for name in MODELS:
        out[f"only-{name}"] = [r for r in base if (r.get("model") or next(iter(MODELS))) == name]
    return out


def _write(tmp: Path, recs: List[Dict[str, Any]]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "environment.json").write_text((BASELINE / "environment.json").read_text())
    write_report(tmp, recs)
    return tmp


def _per_target_rows(md: str) -> List[List[str]]:
    """The cells of summary.md's "Per target" table rows."""
    lines = md.split("## Per target", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| model |")]
    out = []
    for ln in rows:
        out.append([c.strip() for c in re.split(r"(?<!\\)\|", ln.strip()[1:-1])])
    return out


@pytest.mark.parametrize("variant", ["single", "only-skips", "untimed", "nan-metrics", "every-status",
                                     "no-optional-fields", "no-model-field", *(f"only-{m}" for m in MODELS)])
def test_every_output_is_written_and_parseable(baseline, tmp_path, variant):
    recs = _variants(baseline)[variant]
    assert recs, variant
    out = _write(tmp_path / variant, recs)

    # junit.xml: one testcase per record, the status mapped as pytest's junitxml does
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(recs) == int(suite.get("tests"))
    for r, tc in zip(recs, cases):
        assert tc.get("name") == r["cell_id"]
        kids = [c.tag for c in tc]
        assert kids == ([JUNIT[r["status"]]] if JUNIT[r["status"]] else []), (r["status"], kids)
        if r["status"] == "xfail":
            assert tc.find("skipped").get("type") == "xfail"
        model = tc.get("classname").split(".")[0]
        assert model in MODELS  # a record without a model field is its owner's, never "None"
    assert int(suite.get("failures")) == sum(JUNIT[r["status"]] == "failure" for r in recs)
    assert int(suite.get("errors")) == sum(JUNIT[r["status"]] == "error" for r in recs)

    # results.csv: one row per record, in order
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == len(recs) and list(csv["cell_id"]) == [r["cell_id"] for r in recs]

    # report.html: every cell id in the table's data, the page complete
    html = (out / "report.html").read_text()
    assert html.rstrip().endswith("</html>")
    data = json.loads(html.split('<script type="application/json" id="cell-data">', 1)[1].split("</script>", 1)[0])
    assert [row[0] for row in data["rows"]] == [r["cell_id"] for r in recs]
    assert set(data["details"]) == {r["cell_id"] for r in recs}
    assert all(row[data["cols"].index("model")] in MODELS for row in data["rows"])

    # summary.md: counts of every status present, no "nan"/"None"/"inf" label in the per-target rows
    md = (out / "summary.md").read_text()
    counts = {s: sum(r["status"] == s for r in recs) for s in STATUSES}
    assert md.splitlines()[2] == f"{len(recs)} cells · " + " · ".join(f"{s}: {n}" for s, n in counts.items() if n)
    rows = _per_target_rows(md)
    assert rows
    for row in rows:
        for cell in row:
            assert not {"nan", "None", "inf"} & set(cell.replace("·", " ").replace("/", " ").split()), row


def test_every_status_is_reported_as_unexpected_or_not(baseline, tmp_path):
    recs = _variants(baseline)["every-status"]
    md = (_write(tmp_path, recs) / "summary.md").read_text()
    n_bad = sum(r["status"] in ("fail", "error", "xpass", "crash", "timeout") for r in recs)
    assert f"## Unexpected results ({n_bad})" in md


def test_untimed_runs_still_decide_and_say_so(baseline, tmp_path):
    """Crashed before the split (decide's runner-up sentence formatted a None p50 ratio)."""
    md = (_write(tmp_path, _variants(baseline)["untimed"]) / "summary.md").read_text()
    table = md.split("## What to ship, per target", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| model |")]
    assert rows and all("| not timed |" in ln or "**blocked**" in ln for ln in rows)
    assert "no latency measured" in table and "None" not in table


def test_nan_metrics_read_as_missing(baseline, tmp_path):
    """Crashed before the split (NaN p50 on the figures' log axes); NaN p50 now counts as not timed."""
    out = _write(tmp_path, _variants(baseline)["nan-metrics"])
    md = (out / "summary.md").read_text()
    table = md.split("## What to ship, per target", 1)[1].split("\n## ", 1)[0]
    assert "nan" not in table and "not timed" in table
    assert not any(r[11] for r in _per_target_rows(md))  # fastest p50 per mode: nothing was timed
    findings = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert "nanx" not in findings and "+nan %" not in findings
    assert "Latency and parity" not in (out / "report.html").read_text()  # no finite p50: no latency figure


def test_model_sections_come_from_their_adapter(baseline, tmp_path):
    """A model's own section and findings appear with its records only (here: RVM's recurrent section)."""
    for name in MODELS:
        recs = [r for r in baseline if (r.get("model") or next(iter(MODELS))) == name]
        html = (_write(tmp_path / name, recs) / "report.html").read_text()
        for other in MODELS.values():
            for s in other.report_sections(baseline):
                assert (f'<h2 id="{s.id}">' in html) == (other.name == name and bool(other.report_sections(recs)))
    assert any(s.id == "recurrent" for s in MODELS["rvm"].report_sections(baseline))
