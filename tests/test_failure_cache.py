"""Deterministic export failures are results too: a failed export is cached under the key its artifact
would have, so another cell of the same export in a later run (another runtime, a new onnxruntime) replays
it instead of paying for it again, with the same reason and verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELLS = "exporter=onnx,crop_method=unfold,replace_method=scatter_nd,refine_mode=sampling,opset=17,simplify=false," \
        "precision=fp32,refine_patch_select=nonzero,input_guard=false"


def _run(out: Path, cache: Path, runtime: str, *extra: str):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--profile", "ci", "--filter", f"{CELLS},runtime={runtime}",
                           "--out", str(out), "--cache-dir", str(cache), "--no-progress", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 1, [r["cell_id"] for r in recs]
    return recs[0]


def test_a_failed_export_is_replayed_from_the_cache_with_the_same_verdict(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path / "a", cache, "onnxruntime-cpu")
    assert (first["status"], first["stage"], first["rule"]) == ("xfail", "export", "unfold-legacy-onnx")
    assert first["cache"] == ""
    entries = list((cache / "export-failure").glob("*/*/meta.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["stage"] == "export"
    # another runtime, same export: not re-attempted, same reason and verdict, the exporter's log linked
    second = _run(tmp_path / "b", cache, "openvino-cpu")
    assert second["cache"] == "export-failure"
    assert (second["status"], second["stage"], second["rule"], second["reason"]) == (
        first["status"], first["stage"], first["rule"], first["reason"])
    assert (tmp_path / "b" / "artifacts" / second["cell_id"] / "model.export.log").is_file()
    # --no-cache re-attempts it (a private cache), and gets the same answer the hard way
    third = _run(tmp_path / "c", cache, "openvino-cpu", "--no-cache")
    assert third["cache"] == "" and third["reason"] == first["reason"]
