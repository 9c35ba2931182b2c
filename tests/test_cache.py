"""Content-addressed cache: keys change with what changes an entry; writes are atomic and shared."""

from __future__ import annotations

import json

import pytest

from harness import cache as cache_mod
from harness.cache import Cache, make_key
from harness.config import expand, load_config
from harness.keys import CellKeys
from harness.runs import RunOptions

from .test_config import MATRIX


def test_keys_change_with_what_changes_the_entry(monkeypatch, tmp_path):
    plan = expand(load_config(MATRIX), "ci")
    keys = CellKeys(plan, RunOptions(out_dir=tmp_path), threads=2)
    keys.weights_ids()
    onnx = [c for c in plan.cells if c.exporter == "onnx" and c.refine_mode == "sampling" and c.opset == 17
            and c.precision == "fp32" and c.crop_method == "roi_align" and c.replace_method == "scatter_nd"
            and c.refine_patch_select == "nonzero"]
    plain = next(c for c in onnx if not c.simplify)
    sim = next(c for c in onnx if c.simplify)
    # the plain and simplified cells share the plain export; the simplified artifact is its own entry
    assert keys.artifact_key(plain, False) == keys.artifact_key(sim, False)
    assert keys.artifact_key(sim, True) != keys.artifact_key(sim, False)
    ts = [c for c in plan.cells if c.exporter == "torchscript" and c.crop_method == "roi_align"
          and c.replace_method == "scatter_nd" and c.precision == "fp32"]
    official = [c for c in ts if c.refine_patch_select == "nonzero"]
    assert len({keys.artifact_key(c, False) for c in official}) == 1  # one TorchScript file for every mode
    static = {keys.artifact_key(c, False) for c in ts if c.refine_patch_select == "static"}
    assert len(static) == 1 and static.isdisjoint({keys.artifact_key(official[0], False)})  # the selector is baked
    before = keys.result_key(plain), keys.artifact_key(plain, False)
    keys.weights_id["mobilenetv2"] = "calibrated:other"  # other weights: new artifacts and results
    assert keys.result_key(plain) != before[0] and keys.artifact_key(plain, False) != before[1]
    # a new torch version makes every key new
    k1 = make_key("artifact", {"a": 1})
    monkeypatch.setattr(cache_mod, "package_versions", lambda names=(): {"torch": "9.9"})
    assert make_key("artifact", {"a": 1}) != k1
    with pytest.raises(ValueError, match="cache kind 'blob'"):
        make_key("blob", {})


def test_put_is_atomic_and_disabled_cache_misses(tmp_path):
    c = Cache(tmp_path / "c")
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x" * 100)
    key = make_key("artifact", {"n": 1})
    assert c.get("artifact", key) is None
    entry = c.put("artifact", key, {"model.onnx": f}, {"exporter": "onnx-legacy"})
    assert (entry / "model.onnx").read_bytes() == b"x" * 100
    assert json.loads((entry / "meta.json").read_text())["exporter"] == "onnx-legacy"
    assert c.get("artifact", key) == entry and c.hits["artifact"] == 1
    assert c.put("artifact", key, {"model.onnx": f}, {"exporter": "other"}) == entry  # first writer wins
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    off = Cache(tmp_path / "c", enabled=False)
    assert off.get("artifact", key) is None and off.put("artifact", key, {}, {}) is None


def test_a_new_export_never_writes_through_a_cached_artifact(tmp_path):
    """A re-run into the same --out after a change that gives the cell a new artifact key: the files left in
    the cell's folder are hard links into the cache, so writing the new export through them would turn the
    old key's entry into the new file (a stale hit that returns the wrong graph if the code goes back)."""
    from harness.exporters import Artifact
    from harness.runner import Runner

    plan = expand(load_config(MATRIX), "smoke")
    cache = Cache(tmp_path / "cache")
    runner = Runner(plan, RunOptions(out_dir=tmp_path / "out"), cache, threads=1)
    cell_dir = tmp_path / "out" / "artifacts" / "cell"
    cell_dir.mkdir(parents=True)

    def maker(text):
        def make(path):
            path.write_text(text)
            path.with_suffix(".log").write_text(text + " log")
            return Artifact(path, "onnx", "onnx", 0.1, {})
        return make

    old_key, new_key = "a" * 64, "b" * 64
    runner._artifact(cell_dir, old_key, maker("old graph"), "model.onnx")
    assert (cell_dir / "model.onnx").stat().st_nlink >= 2  # hard-linked into the cache (same file system)
    runner._artifact(cell_dir, new_key, maker("new graph"), "model.onnx")
    assert (cell_dir / "model.onnx").read_text() == "new graph"
    hit = cache.get("artifact", old_key)
    assert (hit / "model.onnx").read_text() == "old graph" and (hit / "model.log").read_text() == "old graph log"
    runner._artifact(cell_dir, old_key, maker("must not be made"), "model.onnx")  # the old key: its own file
    assert (cell_dir / "model.onnx").read_text() == "old graph"


def test_a_model_file_change_reruns_only_that_models_cells(monkeypatch, tmp_path):
    """Result and artifact keys hash the cell's own model code (its adapter's ``code_dir``), not every model's:
    editing another model's file leaves BGMv2's cells cached; editing model/bgmv2 re-runs them."""
    from harness import keys as keys_mod

    salt: dict = {}
    real = cache_mod.code_hash
    monkeypatch.setattr(keys_mod, "code_hash", lambda *paths: real(*paths) + "".join(salt.get(p, "") for p in paths))
    plan = expand(load_config(MATRIX), "smoke")
    keys = CellKeys(plan, RunOptions(out_dir=tmp_path), threads=2)
    keys.weights_ids()
    cell = plan.cells[0]
    before = (keys.result_key(cell), keys.artifact_key(cell, False))
    salt["tests/plugins/toymatte.py"] = "edited"  # another model's source
    assert (keys.result_key(cell), keys.artifact_key(cell, False)) == before
    salt["model/bgmv2"] = "edited"
    assert keys.result_key(cell) != before[0] and keys.artifact_key(cell, False) != before[1]
