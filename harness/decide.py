"""The report's judgement: which configuration to ship per deployment target, and why.

A *target* is what a deployment engineer ships on: a model (BGMv2, RVM) on one runtime (``onnxruntime-cpu``,
``openvino-cpu``, ``libtorch-cpp``, ...) at one precision. Its *candidates* are the configurations that ran
there at one comparison shape (the network: BGMv2's backbone / RVM's variant; resolution; batch): exporter,
opset, onnxsim and the model's own knobs (BGMv2: crop, replace, refine mode; RVM: refiner, ratio, ratio mode,
dim names).

The choice rule (:func:`decide`), in order:

1. **Accuracy gates.** Only ``pass`` cells compete: parity within the precision's tolerance against eager
   PyTorch on real inputs. ``xpass`` is left out (a rule says it should fail: stale rule or lucky input).
2. **Latency, where the difference is real.** The fastest candidate by end-to-end p50 is the reference. Every
   other candidate's p50 ratio to it gets a 95 % bootstrap confidence interval from the stored per-call samples
   (:func:`p50_ratio_ci`: both sample sets resampled independently, 2,000 draws, fixed seed, so the same
   records give the same decision). A candidate whose interval lies above ``1 + MIN_EFFECT`` is *slower*;
   every other one *ties* with the fastest: the difference is inside the measurement noise (or under 5 %).
   Where the run re-measured the finalists in interleaved rounds (:mod:`harness.rounds`, the ``ci``
   profile), their ratios and intervals come from the rounds instead: paired per round, computed over
   rounds, so they hold from one run to the next (the burst interval above measures a few consecutive calls
   and missed 20-80 % swings between two moments of a run, issue 29).
3. **Ties are broken by portability** (:func:`portability`): more runtimes that pass with the *same
   artifact* (same ``artifact_key``), then fewer data-dependent ONNX ops (NonZero, TopK, Scatter*, ...:
   what TensorRT, CoreML and TFLite refuse), then more static-analysis targets the graph is ready for; then
   the smaller artifact (MiB, to 0.1), then the configuration label. Not the p50: a tie means the
   difference is inside the noise, and a pick that follows noise flips from one run to the next.

The runner-up is the best of the rest by the same order, with the reason it lost. A target where nothing
passes is *blocked*: the failures are grouped by rule or exception class, with the rule's evidence link.

Refine mode (BGMv2) and downsample ratio (RVM) change what the model computes, not only how it is
exported: the decision names the best configuration per value too (:attr:`Decision.per_semantic`), so a
user who must run sampling mode at 4K reads the answer for sampling mode.

Torch-free (the report is built from records alone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .models import default_model, record_owner
from .rounds import GroupRounds, RoundsProtocol

PASSING = ("pass",)
MIN_EFFECT = 0.05  # a p50 difference under 5 % is a tie even when the samples say it is real
N_BOOT = 2000
LEVEL = 0.95
URL = re.compile(r"https?://[^\s\])'\"]+")


def _samples(r: Dict[str, Any]) -> Optional[np.ndarray]:
    """The record's finite per-call latency samples (ms), or None for fewer than two."""
    s = np.asarray(r.get("latency_samples_ms") or [], dtype=np.float64)
    s = s[np.isfinite(s)]
    return s if len(s) >= 2 else None


def _p50(r: Dict[str, Any]) -> Optional[float]:
    """The record's p50 in ms; None when it was not timed or is not a finite number (NaN: not timed either)."""
    v = r.get("p50_ms")
    return float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None


def p50_ratio_ci(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> Tuple[float, float, float]:
    """``(ratio, lo, hi)``: median(a) / median(b) and its bootstrap ``level`` confidence interval.

    ``a``, ``b``: per-call latencies (ms, any positive floats, at least 2 each). Each set is resampled with
    replacement independently ``n_boot`` times (percentile interval). Deterministic for a given seed.
    Raises ValueError on fewer than 2 samples or a non-positive median.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"p50_ratio_ci needs >= 2 samples per side (got {a.size} and {b.size})")
    if np.median(b) <= 0 or np.median(a) <= 0:
        raise ValueError("p50_ratio_ci needs positive latencies")
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, a.size, (n_boot, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, (n_boot, b.size))], axis=1)
    ratios = ma / mb
    q = (1 - level) / 2
    return float(np.median(a) / np.median(b)), float(np.quantile(ratios, q)), float(np.quantile(ratios, 1 - q))


def p50_ci(a: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Tuple[float, float]:
    """Bootstrap ``level`` confidence interval ``(lo, hi)`` of the median of ``a`` (ms)."""
    a = np.asarray(a, dtype=np.float64)
    rng = np.random.default_rng(seed)
    m = np.median(a[rng.integers(0, a.size, (n_boot, a.size))], axis=1)
    q = (1 - level) / 2
    return float(np.quantile(m, q)), float(np.quantile(m, 1 - q))


def _adapter(r: Dict[str, Any]) -> Any:
    return record_owner(r)


def shape_key(r: Dict[str, Any]) -> Tuple[Any, ...]:
    """What must be equal for two cells' latencies to be comparable: the network (the adapter's
    ``grid_group_axes``), resolution and batch."""
    a = _adapter(r)
    return tuple((k, r.get(k)) for k in a.grid_group_axes) + (("resolution", r.get("resolution")),
                                                               ("batch", r.get("batch")))


def _axis_default(adapter: Any, name: str) -> Any:
    """The single default value of a model axis (e.g. BGMv2's ``refine_patch_select: [nonzero]``), else a
    sentinel that equals nothing."""
    f = getattr(adapter.axes, "model_fields", {}).get(name)
    d = getattr(f, "default", None)
    return d[0] if isinstance(d, list) and len(d) == 1 else object()


def knobs(r: Dict[str, Any]) -> Dict[str, Any]:
    """The configuration a user reproduces: exporter, opset, onnxsim and the model's own axes (not the
    network, which is part of the comparison shape; axes at their single default value, e.g. BGMv2's
    ``input_guard: false``, are left out)."""
    a = _adapter(r)
    out: Dict[str, Any] = {"exporter": r.get("exporter"), "opset": r.get("opset"), "onnxsim": bool(r.get("simplify"))}
    for k in a.axis_names():
        if k in a.grid_group_axes:
            continue
        v = r.get(k)
        if v not in (None, "n/a") and v != _axis_default(a, k):
            out[k] = v
    return out


def config_label(r: Dict[str, Any]) -> str:
    """Short human label of a cell's configuration, e.g. ``onnx op17 +onnxsim · crop roi_align · ...``."""
    k = knobs(r)
    heads = getattr(_adapter(r), "grid_headers", {}) or {}
    parts = [str(k["exporter"]) + (f" op{k['opset']}" if k.get("opset") is not None else "")
             + (" +onnxsim" if k["onnxsim"] else "")]
    for name, v in k.items():
        if name in ("exporter", "opset", "onnxsim"):
            continue
        head = heads.get(name, name.replace("_", " "))
        if isinstance(v, bool):
            parts.append(head if v else f"no {head}")
            continue
        parts.append(f"{head} {v}")
    return " · ".join(parts)


def _n_ops(text: Any) -> int:
    if not text:
        return 0
    return len([t for t in re.split(r"[,;\s]+", str(text)) if t and not t.isdigit()])


def portability(r: Dict[str, Any], runtimes_by_artifact: Dict[str, set]) -> Tuple[int, int, int]:
    """``(runtimes, data_dependent_ops, ready_targets)`` of a cell: how many runtimes pass with the same
    artifact file (``artifact_key``), how many data-dependent op types its ONNX graph holds
    (``data_dependent_ops``; 0 for non-ONNX artifacts) and for how many static-analysis targets
    (``ready_*``) the graph is ready. More runtimes, fewer ops, more targets = more portable."""
    n_rt = len(runtimes_by_artifact.get(r.get("artifact_key") or "", set())) or 1
    ready = sum(1 for k, v in r.items() if k.startswith("ready_") and not k.endswith("_why") and v is True)
    return n_rt, _n_ops(r.get("data_dependent_ops")), ready


def accuracy(r: Dict[str, Any], env: Dict[str, Any]) -> Dict[str, Any]:
    """The judged error of a passing cell on its primary output (``pha``): judged max abs (outside
    near-tie patches for BGMv2), the fraction of pixels beyond atol, and the tolerance it was judged by."""
    ref = r.get("parity_ref") or r.get("precision")
    tol = (env.get("tolerances") or {}).get(ref if ref in ("fp32", "fp16") else r.get("precision"), {})
    err = r.get("judged_max_abs_pha", r.get("max_abs_pha"))
    return {"max_abs": err, "violation_frac": r.get("violation_frac_pha"), "atol": tol.get("atol"),
            "max_violation_frac": tol.get("max_violation_frac"), "parity_ref": ref}


@dataclass
class Candidate:
    """One passing configuration of a target, scored. ``ratio``/``lo``/``hi``: p50 relative to the
    fastest candidate with its 95 % bootstrap CI (None without samples); ``tie``: not significantly slower."""

    record: Dict[str, Any]
    label: str
    p50_ms: Optional[float]
    p50_ci: Optional[Tuple[float, float]]
    ratio: Optional[float] = None
    lo: Optional[float] = None
    hi: Optional[float] = None
    tie: bool = True
    portability: Tuple[int, int, int] = (1, 0, 0)
    rounds: int = 0  # rounds the ratio comes from (0: from the burst's per-call samples)

    @property
    def cell_id(self) -> str:
        return str(self.record.get("cell_id"))


@dataclass
class Decision:
    """The answer for one target at one comparison shape.

    ``recommended``/``runner_up``: :class:`Candidate` or None; ``why_runner_up_lost``: one sentence;
    ``blocked``: failure groups when nothing passes (``[{cause, count, example, rule, evidence}]``);
    ``per_semantic``: ``{value: label}`` of the best config per refine mode / ratio; ``ran``/``passing``: counts.
    """

    model: str
    runtime: str
    precision: str
    shape: Tuple[Any, ...]
    ran: int
    passing: int
    recommended: Optional[Candidate] = None
    runner_up: Optional[Candidate] = None
    why_runner_up_lost: str = ""
    ties: int = 0
    accuracy: Dict[str, Any] = field(default_factory=dict)
    blocked: List[Dict[str, Any]] = field(default_factory=list)
    per_semantic: Dict[str, str] = field(default_factory=dict)
    semantic_axis: str = ""
    primary: bool = True
    rounds: Optional[GroupRounds] = None  # the interleaved re-measurement of the finalists, if the run made one

    @property
    def target(self) -> str:
        return f"{self.runtime} {self.precision}"

    @property
    def shape_label(self) -> str:
        return " ".join(str(v) if k != "batch" else f"b{v}" for k, v in self.shape)


def _size(c: Candidate) -> float:
    v = c.record.get("artifact_mib")
    return round(float(v), 1) if isinstance(v, (int, float)) and np.isfinite(v) else float("inf")


def _order(c: Candidate) -> Tuple[Any, ...]:
    """Best first: tied before slower, then portability; among ties the smaller artifact, then the label
    (deterministic: never the p50 inside the noise); among the slower ones the p50."""
    n_rt, n_ops, ready = c.portability
    last: Any = (_size(c), c.label) if c.tie else (c.p50_ms if c.p50_ms is not None else float("inf"), c.label)
    return (not c.tie, -n_rt, n_ops, -ready, last)


def rank(cands: List[Candidate], rounds: Optional[GroupRounds] = None) -> List[Candidate]:
    """Score ``cands`` in place against the fastest (ratio, CI, tie) and return them best first.

    With ``rounds`` (the interleaved re-measurement of this decision's finalists), a finalist's ratio and
    interval are the rounds' (against the rounds' reference) and it is slower only when the interval's low end
    clears ``1 + MIN_EFFECT``; fewer than 6 rounds or no interval: a tie. A candidate outside the rounds keeps
    its burst ratio against the burst's fastest (it was left out of the finalists for it)."""
    timed = [c for c in cands if c.p50_ms is not None]
    if rounds is not None and rounds.ratios and rounds.reference:
        _rank_rounds(cands, rounds)
    elif timed:
        fastest = min(timed, key=lambda c: c.p50_ms)
        fs = _samples(fastest.record)
        for c in cands:
            if c.p50_ms is None:
                c.tie = False
                continue
            cs = _samples(c.record)
            if c is fastest:
                c.ratio, c.lo, c.hi, c.tie = 1.0, 1.0, 1.0, True
            elif cs is not None and fs is not None:
                c.ratio, c.lo, c.hi = p50_ratio_ci(cs, fs)
                c.tie = c.lo <= 1.0 + MIN_EFFECT
            else:
                c.ratio = c.p50_ms / fastest.p50_ms
                c.tie = c.ratio <= 1.0 + MIN_EFFECT
    return sorted(cands, key=_order)


def _rank_rounds(cands: List[Candidate], g: GroupRounds) -> None:
    # a candidate outside the rounds was left out for its burst p50 against the burst's fastest: judged so
    timed = [c for c in cands if c.p50_ms is not None]
    ref = min(timed, key=lambda c: c.p50_ms) if timed else None
    rs = _samples(ref.record) if ref is not None else None
    for c in cands:
        v = g.ratios.get(c.cell_id)
        if v is not None:
            c.ratio, c.lo, c.hi = v[0], v[1], v[2]
            c.rounds = g.rounds
            c.tie = c.cell_id == g.reference or c.lo is None or c.lo <= 1.0 + MIN_EFFECT
            if c.cell_id == g.reference:
                c.ratio, c.lo, c.hi = 1.0, 1.0, 1.0
            continue
        if c.p50_ms is None or ref is None or ref.p50_ms is None:
            c.tie = False
            continue
        cs = _samples(c.record)
        if cs is not None and rs is not None:
            c.ratio, c.lo, c.hi = p50_ratio_ci(cs, rs)
            c.tie = c.lo <= 1.0 + MIN_EFFECT
        else:
            c.ratio = c.p50_ms / ref.p50_ms
            c.tie = c.ratio <= 1.0 + MIN_EFFECT


def _why_lost(best: Candidate, other: Candidate) -> str:
    if not other.tie:
        if other.lo is not None and other.hi is not None and other.ratio is not None:
            ci = f" (95 % CI {other.lo:.2f}–{other.hi:.2f}{_over(other)})" if other.lo != other.hi else ""
            return f"slower: p50 x{other.ratio:.2f} of the fastest{ci}"
        return "no latency measured" if other.p50_ms is None else f"slower: p50 x{other.ratio:.2f}"
    (br, bo, bt), (orr, oo, ot) = best.portability, other.portability
    if other.ratio is None:  # nothing at this target was timed (rank had no fastest): portability alone decides
        tie = "no latency measured"
    else:
        tie = f"tied on latency (p50 x{other.ratio:.2f}" + (
            f", 95 % CI {other.lo:.2f}–{other.hi:.2f}{_over(other)})" if other.lo is not None and other.lo != other.hi
            else (f", {other.rounds} rounds: too few for an interval)" if other.rounds else ")"))
    if orr < br:
        return f"{tie}; less portable: its artifact passes on {orr} runtime(s), the winner's on {br}"
    if oo > bo:
        return f"{tie}; less portable: {oo} data-dependent op type(s) vs {bo}"
    if ot < bt:
        return f"{tie}; less portable: graph ready for {ot} static-analysis target(s) vs {bt}"
    if _size(other) > _size(best):
        return f"{tie}; equally portable, larger artifact ({_size(other):.1f} vs {_size(best):.1f} MiB)"
    return f"{tie}; equally portable and as large: the configuration order decides (inside the noise)"


def _over(c: Candidate) -> str:
    return f" over {c.rounds} interleaved rounds" if c.rounds else " over the burst's calls"


def _cause(r: Dict[str, Any]) -> str:
    if r.get("rule"):
        return f"rule {r['rule']}"
    reason = str(r.get("reason") or "")
    m = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure))\b", reason)
    if m:
        return f"{r.get('status')} at {r.get('stage')}: {m.group(1)}"
    return f"{r.get('status')} at {r.get('stage')}"


def failure_groups(records: List[Dict[str, Any]], env: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Non-passing, non-skipped cells grouped by cause (the rule id, or status + stage + exception class):
    ``[{cause, status, count, example, reason, evidence}]``, largest first. ``evidence`` is the rule's link
    (``environment.json`` ``rules``), else the first URL in the reason, else ''."""
    rules = (env or {}).get("rules") or {}
    groups: Dict[str, Dict[str, Any]] = {}
    for r in records:
        if r.get("status") in ("pass", "skip"):
            continue
        c = _cause(r)
        g = groups.setdefault(c, {"cause": c, "status": r.get("status"), "count": 0, "example": r.get("cell_id"),
                                  "reason": str(r.get("reason") or ""), "rule": r.get("rule") or "", "evidence": ""})
        g["count"] += 1
        if not g["evidence"]:
            ev = (rules.get(r.get("rule") or "") or {}).get("evidence") or ""
            if not ev:
                m = URL.search(str(r.get("reason") or ""))
                ev = m.group(0) if m else ""
            g["evidence"] = ev
    return sorted(groups.values(), key=lambda g: (-g["count"], g["cause"]))


# The order of the decision table: the deployment targets users ask about first (GPU, then the CPU
# runtimes a product ships, then Python-only ones); unknown runtimes after, alphabetically.
RUNTIME_ORDER = ("onnxruntime-tensorrt", "onnxruntime-cuda", "torchscript-cuda", "eager-cuda", "onnxruntime-cpu",
                 "openvino-cpu", "openvino-cpu-static", "libtorch-cpp", "executorch-cpu", "torchscript-cpu",
                 "aoti-cpu", "eager-cpu")


def target_order(model: str, runtime: str, precision: str) -> Tuple[Any, ...]:
    """Sort key of a target: the default model (:func:`harness.models.default_model`) before the others,
    :data:`RUNTIME_ORDER`, fp32 before fp16."""
    rank = RUNTIME_ORDER.index(runtime) if runtime in RUNTIME_ORDER else len(RUNTIME_ORDER)
    return (model != default_model(), model, rank, runtime, precision != "fp32", precision)


def group_name(model: str, runtime: str, precision: str, shape: Tuple[Any, ...]) -> str:
    """The name of one decision's group of candidates, e.g. ``bgmv2 onnxruntime-cpu fp32 mobilenetv2 288x512 b1``
    (how :mod:`harness.rounds` files its rounds)."""
    label = " ".join(str(v) if k != "batch" else f"b{v}" for k, v in shape)
    return f"{model} {runtime} {precision} {label}"


def _targets(records: List[Dict[str, Any]]) -> Dict[Tuple[str, str, str], Dict[Tuple[Any, ...], List[Dict[str, Any]]]]:
    targets: Dict[Tuple[str, str, str], Dict[Tuple[Any, ...], List[Dict[str, Any]]]] = {}
    for r in records:
        if r.get("status") == "skip":
            continue
        t = (_adapter(r).name, str(r.get("runtime")), str(r.get("precision")))
        targets.setdefault(t, {}).setdefault(shape_key(r), []).append(r)
    return targets


def _runtimes_by_artifact(records: List[Dict[str, Any]]) -> Dict[str, set]:
    out: Dict[str, set] = {}
    for r in records:
        if r.get("status") in PASSING and r.get("artifact_key"):
            out.setdefault(r["artifact_key"], set()).add(r.get("runtime"))
    return out


def finalists(records: List[Dict[str, Any]], protocol: RoundsProtocol) -> List[Tuple[str, List[Dict[str, Any]]]]:
    """The groups of candidates to re-measure in interleaved rounds: per decision (target and shape) with at
    least two timed passing candidates, the fastest by burst p50 plus up to ``protocol.finalists`` others whose
    burst p50 is within ``protocol.within`` of it, best first by the tie order (portability, size, label: the
    candidates that win if they tie). Returns ``[(group_name, [records])]`` with the fastest first."""
    by_art = _runtimes_by_artifact(records)
    out = []
    for (model, rt, prec), shapes in sorted(_targets(records).items(), key=lambda kv: target_order(*kv[0])):
        for shape, rs in shapes.items():
            cands = [Candidate(record=r, label=config_label(r), p50_ms=_p50(r), p50_ci=None,
                               portability=portability(r, by_art))
                     for r in rs if r["status"] in PASSING and _p50(r) is not None]
            if len(cands) < 2:
                continue
            fastest = min(cands, key=lambda c: (c.p50_ms, c.label))
            near = [c for c in cands if c is not fastest and c.p50_ms <= protocol.within * fastest.p50_ms]
            near.sort(key=_order)  # every candidate still counts as tied here: the tie order
            picked = [fastest] + near[: protocol.finalists]
            if len(picked) < 2:
                continue  # nothing near the fastest: nothing the rounds could change
            out.append((group_name(model, rt, prec, shape), [c.record for c in picked]))
    return out


def decide(records: List[Dict[str, Any]], env: Optional[Dict[str, Any]] = None,
           rounds: Optional[Sequence[GroupRounds]] = None) -> List[Decision]:
    """One :class:`Decision` per (model, runtime, precision) and comparison shape; per target the shape with
    the most passing cells (then the most cells, then batch 1) is ``primary`` and listed first.

    ``rounds``: the run's interleaved re-measurements (:func:`harness.rounds.read_rounds`); a decision whose
    group was re-measured ranks its finalists by the rounds.

    Targets whose cells are all ``skip`` (not runnable on this machine) get no decision: they say nothing
    about the target."""
    env = env or {}
    groups = {g.group: g for g in (rounds or []) if not g.group.startswith("gate:")}
    runtimes_by_artifact = _runtimes_by_artifact(records)
    targets = _targets(records)
    out: List[Decision] = []
    for (model, rt, prec), shapes in sorted(targets.items(), key=lambda kv: target_order(*kv[0])):
        def weight(item):
            shape, rs = item
            n_ok = sum(r["status"] in PASSING for r in rs)
            batch = dict(shape).get("batch")
            return (-n_ok, -len(rs), batch != 1, str(shape))

        ordered = sorted(shapes.items(), key=weight)
        for i, (shape, rs) in enumerate(ordered):
            d = _decide_one(model, rt, prec, shape, rs, runtimes_by_artifact, env,
                            groups.get(group_name(model, rt, prec, shape)))
            d.primary = i == 0
            out.append(d)
    return out


def _decide_one(model: str, rt: str, prec: str, shape: Tuple[Any, ...], rs: List[Dict[str, Any]],
                runtimes_by_artifact: Dict[str, set], env: Dict[str, Any],
                rounds: Optional[GroupRounds] = None) -> Decision:
    ok = [r for r in rs if r["status"] in PASSING]
    d = Decision(model=model, runtime=rt, precision=prec, shape=shape, ran=len(rs), passing=len(ok))
    adapter = _adapter(rs[0])
    d.semantic_axis = getattr(adapter, "semantic_axis", "") or ""
    if not ok:
        d.blocked = failure_groups(rs, env)
        return d
    cands = []
    for r in ok:
        s = _samples(r)
        cands.append(Candidate(record=r, label=config_label(r), p50_ms=_p50(r),
                               p50_ci=p50_ci(s) if s is not None else None,
                               portability=portability(r, runtimes_by_artifact)))
    ranked = rank(cands, rounds)
    d.rounds = rounds
    d.recommended = ranked[0]
    d.ties = sum(c.tie for c in ranked) - 1
    d.accuracy = accuracy(ranked[0].record, env)
    if len(ranked) > 1:
        d.runner_up = ranked[1]
        d.why_runner_up_lost = _why_lost(ranked[0], ranked[1])
    if d.semantic_axis:
        vals = sorted({str(c.record.get(d.semantic_axis)) for c in ranked})
        if len(vals) > 1:
            for v in vals:
                best = next(c for c in ranked if str(c.record.get(d.semantic_axis)) == v)
                p50 = f", p50 {best.p50_ms:.1f} ms" if best.p50_ms is not None else ""
                d.per_semantic[v] = f"{best.label}{p50}"
    return d


def decision_dicts(decisions: List[Decision]) -> List[Dict[str, Any]]:
    """Plain rows, one per decision (what a script or test compares; the Markdown table is
    :func:`harness.report.decision_md`)."""
    rows = []
    for d in decisions:
        row: Dict[str, Any] = {"model": d.model, "target": d.target, "shape": d.shape_label, "primary": d.primary,
                               "passing": d.passing, "ran": d.ran}
        if d.recommended:
            c = d.recommended
            row.update(recommended=c.label, cell_id=c.cell_id, p50_ms=c.p50_ms, p50_ci=c.p50_ci,
                       max_abs=d.accuracy.get("max_abs"), atol=d.accuracy.get("atol"), ties=d.ties,
                       runner_up=d.runner_up.label if d.runner_up else "", why_runner_up_lost=d.why_runner_up_lost)
        else:
            row["blocked"] = "; ".join(f"{g['count']} x {g['cause']}" for g in d.blocked)
        rows.append(row)
    return rows
