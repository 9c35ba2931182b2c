"""Scale-out: `run --shard K/N` and `harness merge`. The split is checked on the real ci profile; the
smoke profile run as 3 shards and merged must equal the unsharded run cell for cell."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import expand, load_config
from harness.pool.coordinator import _export_key
from harness.shard import ShardError, merge, parse_shard, split_loads

ROOT = Path(__file__).resolve().parent.parent
SAME = ("status", "stage", "reason", "rule", "raw_status", "parity_ref", "max_abs_pha", "judged_max_abs_pha",
        "max_abs_fgr", "p50_ms", "latency_samples_ms", "artifact_key", "input_contract")


def _harness(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _records(d: Path):
    return {r["cell_id"]: r for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())}


def test_the_nightly_split_is_deterministic_complete_balanced_and_keeps_exports_together():
    cells = expand(load_config(ROOT / "matrix.yaml"), "nightly").cells
    parts, loads = split_loads(cells, 3)
    again, _ = split_loads(list(reversed(cells)), 3)
    assert [[c.cell_id for c in p] for p in parts] == [[c.cell_id for c in p] for p in again]
    ids = [c.cell_id for p in parts for c in p]
    assert sorted(ids) == sorted(c.cell_id for c in cells) and len(set(ids)) == len(ids)
    owner = {}
    for k, p in enumerate(parts):
        for c in p:
            assert owner.setdefault(_export_key(c), k) == k, c.cell_id  # one export, one shard
    assert max(loads) / min(loads) < 1.1, loads
    # recorded times from an earlier run steer the split (the same file on every shard)
    costs = {c.cell_id: 1.0 for c in cells}
    costs[parts[0][0].cell_id] = 10_000.0
    heavy, loads = split_loads(cells, 3, costs)
    assert [c.cell_id for c in heavy[0]] == [c.cell_id for c in heavy[0] if _export_key(c) == _export_key(parts[0][0])]


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1/0", "x", "1-3", ""])
def test_bad_shard_values_are_refused(bad):
    with pytest.raises(ShardError, match="--shard"):
        parse_shard(bad)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    proc = _harness("run", "--profile", "smoke", "--out", str(root / "whole"), "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for k in (1, 2, 3):
        proc = _harness("run", "--profile", "smoke", "--shard", f"{k}/3", "--out", str(root / f"s{k}"), "--no-progress")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def test_three_shards_merged_equal_the_unsharded_run(sharded, tmp_path):
    whole = _records(sharded / "whole")
    sizes = [len(_records(sharded / f"s{k}")) for k in (1, 2, 3)]
    assert sum(sizes) == len(whole) and min(sizes) > 0
    proc = _harness("merge", str(tmp_path / "merged"), *(str(sharded / f"s{k}") for k in (3, 1, 2)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = _records(tmp_path / "merged")
    assert set(merged) == set(whole)
    for cid, r in whole.items():
        for f in SAME:
            assert merged[cid].get(f) == r.get(f), (cid, f)
    m = tmp_path / "merged"
    env = json.loads((m / "environment.json").read_text())
    assert [s["shard"] for s in env["shards"]] == ["1/3", "2/3", "3/3"] and env["counts"] == json.loads(
        (sharded / "whole" / "environment.json").read_text())["counts"]
    for name in ("report.html", "summary.md", "junit.xml", "results.csv"):
        assert (m / name).is_file()
    for r in merged.values():
        if r.get("artifact"):
            assert (m / r["artifact"]).is_file(), r["artifact"]
    # the merged run gates like a single-machine run: identical verdicts, no regression
    proc = _harness("diff", str(sharded / "whole"), str(m), "--latency", "never")
    assert proc.returncode == 0, proc.stdout


def test_merge_refuses_what_is_not_one_complete_split(sharded, tmp_path):
    with pytest.raises(ShardError, match="shards 1..N"):
        merge(tmp_path / "a", [sharded / "s1", sharded / "s2"])
    with pytest.raises(ShardError, match="shards 1..N"):
        merge(tmp_path / "b", [sharded / "s1", sharded / "s1", sharded / "s2", sharded / "s3"])
    with pytest.raises(ShardError, match="not a shard"):
        merge(tmp_path / "c", [sharded / "whole"])
    cut = tmp_path / "cut"
    shutil.copytree(sharded / "s2", cut)
    lines = (cut / "results.jsonl").read_text().splitlines()
    (cut / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ShardError, match="incomplete"):
        merge(tmp_path / "d", [sharded / "s1", cut, sharded / "s3"])
    proc = _harness("merge", str(tmp_path / "e"), str(sharded / "s1"))
    assert proc.returncode == 2 and "shards 1..N" in proc.stderr
