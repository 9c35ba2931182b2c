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


def test_the_picks_safety_notes_reach_the_card_and_the_summary(baseline, tmp_path):
    """Every note of every decision is a list item of its decision card (kind, text, evidence links) and the
    primary ones are bullets of summary.md under "Safety notes on the picks"; a run without notes has no
    such section (one fp32 cell that was not probed)."""
    from markupsafe import escape

    from harness.decide import decide
    from harness.report.tables import nobreak

    out = _write(tmp_path / "all", baseline)
    env = json.loads((out / "environment.json").read_text())
    decisions = decide(baseline, env)
    notes = [n for d in decisions for n in d.notes]
    assert {n.kind for n in notes} == {"slower_than_fp32", "guard", "input_contract", "parity_rule"}
    page = (out / "report.html").read_text()
    table = page.split('<table id="decide"', 1)[1].split('<h2 id="failures">', 1)[0]
    assert table.count("<li data-kind=") == len(notes)
    for n in notes:
        assert str(escape(nobreak(n.text))) in table, n.text  # as the page writes it (no break inside a range)
        for cid in n.cells:
            assert f'data-cell="{cid}" title="{cid}"' in table
    md = (out / "summary.md").read_text()
    section = md.split("### Safety notes on the picks", 1)[1].split("\n## ", 1)[0]
    primary = [n for d in decisions if d.primary for n in d.notes]
    assert section.count("\n- **") == len(primary)
    assert "- **do not ship**: fp16 slower than fp32 here: do not ship." in section
    assert "Drift profile: the median, 90 %, 99 %, 99.9 % quantiles" in section  # defined where it is used
    plain = [r for r in baseline if r["status"] == "pass" and r["precision"] == "fp32" and not r.get("input_contract")]
    assert "Safety notes on the picks" not in (_write(tmp_path / "plain", plain[:1]) / "summary.md").read_text()


def test_paths_in_reasons_and_runtime_facts_are_relative(baseline):
    """The checkout and the virtualenv that ran leak no absolute path into the page: a path into the
    repository keeps its repository-relative part, a package file its site-packages-relative part; URLs and
    ratios are left alone (near-misses)."""
    from harness.report.tables import cell_details, strip_paths, table_rows

    xf = next(r for r in baseline if '"/work/main/model/bgmv2/' in str(r.get("reason")))
    lt = next(r for r in baseline if "site-packages/torchvision" in str(r.get("runtime_info")))
    row = table_rows([xf])[0]
    assert 'File "model/bgmv2/' in row["reason"] and "/work/" not in row["reason"]
    text = "\n".join(cell_details([lt], {})[lt["cell_id"]]["lines"])
    assert "torchvision/_C_stable.so" in text and "site-packages" not in text and "/work/" not in text
    assert strip_paths("at /home/ci/checkout/harness/pool/worker.py:12") == "at harness/pool/worker.py:12"
    assert strip_paths("C:\\venv\\Lib\\site-packages\\onnx\\x.py") == "onnx\\x.py"
    for same in ("see https://github.com/pytorch/pytorch/blob/main/docs/x.md", "38/54 pass", "1.01–1.05", ""):
        assert strip_paths(same) == same


def test_readiness_rows_are_one_per_onnx_file_labelled_from_its_own_knobs(baseline):
    """RVM's ONNX files were collapsed into a few rows labelled 'None None None/None op12 fp32' (BGMv2's knobs
    read from an RVM record)."""
    from harness.decide import config_label
    from harness.report.tables import readiness_rows

    rows = readiness_rows(baseline)
    analysed = {(r["model"], r["artifact_key"]): r for r in baseline if r.get("onnx_nodes") is not None}
    assert len(rows) == len(analysed)
    assert sum(row["model"] == "rvm" for row in rows) == len({k for k in analysed if k[0] == "rvm"}) == 23
    labels = {f"{config_label(r)} · {r['precision']}" for r in analysed.values()}
    for row in rows:
        assert "None" not in row["config"] + row["network"] + str(row["export_resolution"]), row
        assert row["config"] in labels
    assert len({(row["model"], row["config"], row["export_resolution"]) for row in rows if row["model"] == "rvm"}) > 6


def test_per_target_rows_never_pool_models_image_sizes_or_batches(baseline):
    from harness.report.tables import target_rows

    rows = target_rows(baseline)
    keys = [(t["model"], t["runtime"], t["exporter"], t["precision"], t["resolution"], t["batch"]) for t in rows]
    assert len(keys) == len(set(keys))
    for t in rows:
        mine = [r for r in baseline if (r["model"], r["runtime"], r["exporter"], r["precision"], r["resolution"],
                                        r["batch"]) == (t["model"], t["runtime"], t["exporter"], t["precision"],
                                                        t["resolution"], t["batch"])]
        assert t["passing"] == sum(r["status"] in ("pass", "xpass") for r in mine)
        timed = [r["p50_ms"] for r in mine if r["status"] == "pass" and r.get("p50_ms")]
        if timed:  # the fastest named is one of this row's own cells
            best = [float(x.rsplit(" ", 1)[1]) for x in t["p50_best"].split(" · ")]
            assert min(best) == pytest.approx(min(timed), abs=0.05), t
    big = [t for t in rows if t["model"] == "rvm" and t["resolution"] == "721x1283"]
    small = [t for t in rows if t["model"] == "rvm" and t["resolution"] == "288x512" and t["runtime"] == big[0]["runtime"]
             and t["exporter"] == big[0]["exporter"] and t["batch"] == 1]
    assert big and small and big[0]["p50_best"] != small[0]["p50_best"]


def test_results_csv_has_the_benchmark_columns(baseline, tmp_path):
    """Size, fps, first call, memory, calls and seconds measured, and the precision OpenVINO says it ran."""
    out = _write(tmp_path, baseline)
    csv = pd.read_csv(out / "results.csv")
    for col in ("artifact_mib", "fps", "cold_ms", "worker_max_rss_mib", "latency_runs", "measure_s", "exec_precision"):
        assert col in csv.columns, col
    ov = csv[(csv.runtime == "openvino-cpu") & (csv.status == "pass")]
    want = [{"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[json.loads(i)["inference_precision"]] for i in ov.runtime_info]
    assert len(ov) > 20 and list(ov.exec_precision) == want
    assert csv[csv.runtime == "onnxruntime-cpu"].exec_precision.isna().all()  # onnxruntime does not say


def test_the_table_shows_latency_only_for_cells_that_passed(baseline):
    from harness.report.tables import table_rows

    recs = _variants(baseline)["every-status"]
    for r, row in zip(recs, table_rows(recs)):
        timed = r["status"] in ("pass", "xpass") and r.get("p50_ms") is not None
        for c in ("p50_ms", "fps", "cold_ms", "latency_runs", "measure_s"):
            assert bool(row[c]) == (timed and r.get({"measure_s": "latency_samples_ms"}.get(c, c)) is not None), (c, r["status"])
        assert row["artifact_mib"] == ("" if r.get("artifact_mib") is None else f"{r['artifact_mib']:.1f}")


def test_figures_are_drawn_per_model_network_resolution_and_batch(baseline):
    from harness.report.figures import figure_groups, plots

    groups = figure_groups([r for r in baseline if r.get("p50_ms") is not None])
    for title, recs in groups:
        assert len({(r["model"], r["resolution"], r["batch"]) for r in recs}) == 1, title
    titles = [t for t, _ in groups]
    assert any(t.startswith("rvm") and "721x1283" in t for t in titles) and any(t.startswith("bgmv2") for t in titles)
    drawn = plots(baseline, json.loads((BASELINE / "environment.json").read_text()))
    assert [f["title"] for f in drawn["latency"]] == titles  # every group has passing timed cells here
    assert [f["title"] for f in drawn["scatter"]] == [t for t, g in groups if len(g) >= 4]
    assert {"rvm · mobilenetv3 · 288x512 · batch 1", "bgmv2 · mobilenetv2 · 288x512 · batch 1"} <= {
        f["title"] for f in drawn["scatter"]}


def test_the_baseline_box_is_shown_only_for_the_records_it_compared(baseline, tmp_path):
    from harness.diff import diff_records, write
    from harness.report.writers import diff_summary

    new = [dict(r, status="fail") if k == 3 else r for k, r in enumerate(baseline)]
    write(diff_records(baseline, new, base_name="reports/baseline"), tmp_path)
    box = diff_summary(tmp_path, new)
    assert box is not None and box["regression"] and box["base"] == "reports/baseline"
    assert ("New failures", 1) in box["counts"]
    assert box["examples"][0][1] == [new[3]["cell_id"]]
    assert diff_summary(tmp_path, baseline) is None  # other statuses: an earlier run's diff
    assert diff_summary(tmp_path, list(reversed(new))) is not None  # the same records in another order


def test_a_stage_error_keeps_the_model_frame_it_points_at_with_a_relative_path(baseline):
    """The recorded reasons of the baseline were cut at 300 characters inside the absolute path of the model
    frame ('(at File "/work/main/model/bgmv2/r...'): now the path is relative before the line is cut."""
    from harness.runs import describe

    reason = next(r["reason"] for r in baseline if '(at File "/work/main/model/bgmv2/r...' in str(r.get("reason")))
    cause = reason.split(": ", 1)[1].split(' (at File "', 1)[0]
    msg = f'{cause} (at File "/work/main/model/bgmv2/refiner.py", line 88, in forward)'
    text = describe(RuntimeError(msg))
    assert text.endswith('(at File "model/bgmv2/refiner.py", line 88, in forward)'), text
    assert describe(RuntimeError("x" * 700)).endswith("...") and len(describe(RuntimeError("x" * 700))) < 620
