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
   the smaller artifact (MiB, to 0.1), the newer opset, then the configuration label. Not the p50: a tie means the
   difference is inside the noise, and a pick that follows noise flips from one run to the next.
4. **A guarded twin that ties goes first** (:func:`prefer_guarded`): where a model declares the input-guard
   axis (:data:`GUARD_AXIS`), the same config exported with in-graph input checks is placed just ahead of the
   unguarded one when it ties and the probes show it fails silently on fewer bad inputs.

The runner-up is the best of the rest by the same order, with the reason it lost. A target where nothing
passes is *blocked*: the failures are grouped by rule or exception class, with the rule's evidence link.

Every pick carries its safety facts (:attr:`Decision.notes`, :func:`pick_notes`, :func:`precision_notes`): what
it does with input outside the model's contract (the probes' ``input_contract``), whether its input-guarded twin
was chosen (it is, where its latency cost is inside the noise: :func:`prefer_guarded`), whether a reduced
precision is slower than fp32 on the same runtime, and the parity rule a reduced-precision pick passed by.

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
from .values import PROBES
from .verdict import DRIFT_QUANTILES

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
    ``per_semantic``: ``{value: label}`` of the best config per refine mode / ratio; ``ran``/``passing``: counts;
    ``notes``: the pick's safety facts (:class:`Note`, see :func:`pick_notes`); ``candidates``: every passing
    configuration, best first (what the notes compare).
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
    notes: List["Note"] = field(default_factory=list)
    candidates: List[Candidate] = field(default_factory=list, repr=False)

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
    """Best first: tied before slower, then portability; among ties the smaller artifact, the newer opset
    (the one exporters and runtimes maintain), then the label (deterministic: never the p50 inside the
    noise); among the slower ones the p50."""
    n_rt, n_ops, ready = c.portability
    opset = c.record.get("opset")
    newer = -opset if isinstance(opset, int) else 0
    last: Any = (_size(c), newer, c.label) if c.tie else (c.p50_ms if c.p50_ms is not None else float("inf"), c.label)
    return (not c.tie, -n_rt, n_ops, -ready, last)


def rank(cands: List[Candidate], rounds: Optional[GroupRounds] = None) -> List[Candidate]:
    """Score ``cands`` in place against the fastest (ratio, CI, tie) and return them best first.

    With ``rounds`` (the interleaved re-measurement of this decision's finalists), a finalist's ratio and
    interval are the rounds' (against the rounds' reference) and it is slower only when the interval's low end
    clears ``1 + MIN_EFFECT``; fewer than 6 rounds or no interval: a tie. A candidate outside the rounds keeps
    its burst ratio against the burst's fastest (it was left out of the finalists for it)."""
    timed = [c for c in cands if c.p50_ms is not None]
    fastest = min(timed, key=lambda c: c.p50_ms) if timed else None
    if rounds is not None and rounds.ratios and rounds.reference:
        _rank_rounds(cands, rounds, fastest)
    elif fastest is not None:
        fs = _samples(fastest.record)
        for c in cands:
            _score_burst(c, fastest, fs)
    return sorted(cands, key=_order)


def _score_burst(c: Candidate, ref: Candidate, ref_samples: Optional[np.ndarray]) -> None:
    """``c``'s burst ratio to ``ref`` (the bootstrap interval on both cells' per-call samples, else the plain
    p50 ratio) and whether it ties; an untimed candidate never ties."""
    if c.p50_ms is None or ref.p50_ms is None:
        c.tie = False
        return
    cs = _samples(c.record)
    if c is ref:
        c.ratio, c.lo, c.hi, c.tie = 1.0, 1.0, 1.0, True
    elif cs is not None and ref_samples is not None:
        c.ratio, c.lo, c.hi = p50_ratio_ci(cs, ref_samples)
        c.tie = c.lo <= 1.0 + MIN_EFFECT
    else:
        c.ratio = c.p50_ms / ref.p50_ms
        c.tie = c.ratio <= 1.0 + MIN_EFFECT


def _rank_rounds(cands: List[Candidate], g: GroupRounds, fastest: Optional[Candidate]) -> None:
    # a candidate outside the rounds was left out for its burst p50 against the burst's fastest: judged so
    fs = _samples(fastest.record) if fastest is not None else None
    for c in cands:
        v = g.ratios.get(c.cell_id)
        if v is not None:
            c.ratio, c.lo, c.hi = v[0], v[1], v[2]
            c.rounds = g.rounds
            c.tie = c.cell_id == g.reference or c.lo is None or c.lo <= 1.0 + MIN_EFFECT
            if c.cell_id == g.reference:
                c.ratio, c.lo, c.hi = 1.0, 1.0, 1.0
        elif fastest is None:
            c.tie = False
        else:
            _score_burst(c, fastest, fs)


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
    if (other.record.get("opset") or 0) < (best.record.get("opset") or 0):
        return f"{tie}; equally portable and as large: the newer opset goes first"
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
    precision_notes(out, env)
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
    ranked = prefer_guarded(rank(cands, rounds), adapter)
    d.rounds = rounds
    d.candidates = ranked
    d.recommended = ranked[0]
    d.ties = sum(c.tie for c in ranked) - 1
    d.accuracy = accuracy(ranked[0].record, env)
    if len(ranked) > 1:
        d.runner_up = ranked[1]
        d.why_runner_up_lost = _why_unguarded_lost(ranked[0], ranked[1], adapter) or _why_lost(ranked[0], ranked[1])
    if d.semantic_axis:
        vals = sorted({str(c.record.get(d.semantic_axis)) for c in ranked})
        if len(vals) > 1:
            for v in vals:
                best = next(c for c in ranked if str(c.record.get(d.semantic_axis)) == v)
                p50 = f", p50 {best.p50_ms:.1f} ms" if best.p50_ms is not None else ""
                d.per_semantic[v] = f"{best.label}{p50}"
    d.notes = pick_notes(d, rs, adapter, env)
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
                       runner_up=d.runner_up.label if d.runner_up else "", why_runner_up_lost=d.why_runner_up_lost,
                       notes=[n.as_dict() for n in d.notes])
        else:
            row["blocked"] = "; ".join(f"{g['count']} x {g['cause']}" for g in d.blocked)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ safety notes
#: The kinds of :class:`Note`, in the order a decision lists them, with the label a card shows.
NOTE_LABELS: Dict[str, str] = {
    "slower_than_fp32": "do not ship",
    "guard": "input guard",
    "input_contract": "input contract",
    "parity_rule": "parity rule",
}
NOTE_KINDS = tuple(NOTE_LABELS)
#: The axis by which a model adapter declares the input-guard export option: a ``List[bool]`` field of its
#: ``axes`` model whose ``True`` value exports in-graph checks that make the artifact refuse input outside the
#: model's contract (the probes' bad inputs) instead of answering it. A model without such an axis has no
#: guarded twins; the core names the axis, never the model.
GUARD_AXIS = "input_guard"
#: CPU flags that tell how a CPU does fp16 arithmetic: natively (``avx512_fp16``, ``amx_fp16``) or by
#: conversion only (``f16c``).
FP16_CPU_FLAGS = ("avx512_fp16", "amx_fp16", "f16c")
# How a probe outcome (harness/probes.py OUTCOMES) reads on a card, silent failures first.
_OUTCOME_WORDS = (("garbage", "returns a wrong matte without an error for"), ("crash", "kills the process on"),
                  ("timeout", "hangs (the probe timed out) on"), ("pads", "answers as if zero-padded (usable) for"),
                  ("converts", "converts silently (harmless)"), ("refuses", "refuses with an error"),
                  ("not run", "was not probed with"))


@dataclass(frozen=True)
class Note:
    """One safety fact about a decision's pick, in words a deployment engineer acts on.

    ``kind``: one of :data:`NOTE_KINDS` — ``slower_than_fp32`` (a reduced precision slower than the same
    runtime's fp32 beyond the noise: do not ship it), ``guard`` (the input-guarded twin chosen, or what it
    would cost), ``input_contract`` (what the pick does with input outside the model's contract, from the
    probes), ``parity_rule`` (the rule a reduced-precision pick passed parity by); ``text``: the fact in one
    sentence (what a card shows); ``detail``: the numbers and definitions behind it ('' when the text says it
    all); ``cells``: the cell ids the note rests on (the pick first).

    Raises:
        ValueError: an unknown ``kind`` (names it and the known ones) or an empty ``text``.
    """

    kind: str
    text: str
    cells: Tuple[str, ...] = ()
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in NOTE_LABELS:
            raise ValueError(f"note kind {self.kind!r}; expected one of {list(NOTE_KINDS)}")
        if not self.text.strip():
            raise ValueError(f"a {self.kind} note needs a text")

    @property
    def label(self) -> str:
        """The card's label of the kind (:data:`NOTE_LABELS`)."""
        return NOTE_LABELS[self.kind]

    def as_dict(self) -> Dict[str, Any]:
        """``{kind, label, text, detail, cells}`` (JSON-ready)."""
        return {"kind": self.kind, "label": self.label, "text": self.text, "detail": self.detail,
                "cells": list(self.cells)}


def guard_axis(adapter: Any) -> str:
    """:data:`GUARD_AXIS` where ``adapter`` declares it as a boolean axis (``List[bool]``), else ''."""
    f = getattr(adapter.axes, "model_fields", {}).get(GUARD_AXIS)
    if f is None:
        return ""
    return GUARD_AXIS if f.annotation is bool or getattr(f.annotation, "__args__", ()) == (bool,) else ""


def _guarded(r: Dict[str, Any], axis: str) -> bool:
    return bool(axis) and r.get(axis) is True


def _same_config(a: Dict[str, Any], b: Dict[str, Any], axis: str) -> bool:
    """Same runtime, precision, comparison shape and knobs, the guard axis apart."""
    if (a.get("runtime"), a.get("precision")) != (b.get("runtime"), b.get("precision")) or shape_key(a) != shape_key(b):
        return False
    ka, kb = knobs(a), knobs(b)
    ka.pop(axis, None)
    kb.pop(axis, None)
    return ka == kb


def silent_probes(r: Dict[str, Any]) -> Optional[List[str]]:
    """The probes (:data:`harness.values.PROBES`) whose bad input the cell answered with a wrong output and no
    error (outcome ``garbage``), in probe order; None where the cell was not probed (no ``input_contract``)."""
    if not r.get("input_contract"):
        return None
    return [p for p in PROBES if r.get(f"probe_{p}") == "garbage"]


def _safer(guarded_r: Dict[str, Any], plain_r: Dict[str, Any]) -> bool:
    """Both were probed and the guarded cell fails silently on fewer probes, none the plain one does not."""
    g, p = silent_probes(guarded_r), silent_probes(plain_r)
    return g is not None and p is not None and len(g) < len(p) and set(g) <= set(p)


def _probe_input(p: str, r: Dict[str, Any], adapter: Any) -> str:
    """What probe ``p`` fed the cell, in words (harness/probes.py)."""
    if p == "size":
        m = int(getattr(adapter, "size_multiple", 1) or 1)
        return f"H/W not a multiple of {m}" if m > 1 else "H+2 x W+2 input"
    if p == "dtype":
        return "float64 input" if r.get("precision") == "fp32" else "float32 input"
    return {"channels": "4-channel (RGBA) input", "range": "0-255 input"}.get(p, f"the {p} probe's input")


def _inputs(ps: Sequence[str], r: Dict[str, Any], adapter: Any) -> str:
    return ", ".join(_probe_input(p, r, adapter) for p in ps)


def _x(v: float) -> str:
    return f"x{v:.2f}"


def _pct(v: Any) -> str:
    """A fraction as a percentage, e.g. ``29.1 %``, ``0.1 %``."""
    return f"{100 * float(v):.3g} %"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and bool(np.isfinite(v))


def prefer_guarded(ranked: List[Candidate], adapter: Any) -> List[Candidate]:
    """``ranked`` with every input-guarded twin moved just ahead of its unguarded config (same knobs apart
    from :func:`guard_axis`) where the guard costs nothing measurable and buys safety: both are timed, the
    twin *ties* (:func:`rank`'s verdict: its p50 is not significantly above ``1 + MIN_EFFECT`` times the
    fastest's), and the probes show it fails silently on fewer bad inputs (:func:`silent_probes`). A model
    without a guard axis gets ``ranked`` unchanged. Returns a new list."""
    axis = guard_axis(adapter)
    if not axis:
        return ranked
    out = list(ranked)
    for c in ranked:
        if _guarded(c.record, axis) or c.p50_ms is None:
            continue
        twins = [t for t in ranked if _guarded(t.record, axis) and _same_config(t.record, c.record, axis)]
        t = min(twins, key=lambda t: t.cell_id) if twins else None
        if t is None or not t.tie or t.p50_ms is None or not _safer(t.record, c.record):
            continue
        i = next(k for k, x in enumerate(out) if x is c)
        j = next(k for k, x in enumerate(out) if x is t)
        if j > i:
            out.insert(i, out.pop(j))
    return out


def _why_unguarded_lost(best: Candidate, other: Candidate, adapter: Any) -> str:
    """The runner-up's sentence where it is the pick's own config without the input guard, '' otherwise."""
    axis = guard_axis(adapter)
    if not (_guarded(best.record, axis) and not _guarded(other.record, axis)
            and _same_config(best.record, other.record, axis) and _safer(best.record, other.record)):
        return ""
    cost = f" (p50 {_x(best.p50_ms / other.p50_ms)})" if best.p50_ms is not None and other.p50_ms else ""
    silent = _inputs(silent_probes(other.record) or [], other.record, adapter)
    return (f"the same config without the input guard: it returns a wrong matte without an error for {silent}; "
            f"the guard's latency cost is inside the noise{cost}")


def _ci_words(c: Candidate) -> str:
    """How :func:`rank` judged ``c`` against the fastest, in words."""
    if c.lo is not None and c.hi is not None and c.lo != c.hi:
        return f"95 % CI {c.lo:.2f}–{c.hi:.2f} of the fastest's p50"
    if c.ratio == 1.0 and c.lo == c.hi == 1.0:
        return "it is the fastest passing config"
    if c.ratio is not None:
        return f"p50 {_x(c.ratio)} of the fastest's, no per-call samples to bootstrap"
    return "no latency measured"


_SLOWER_MEANS = f"A config is slower only when the 95 % CI of its p50 ratio to the fastest lies above {_x(1 + MIN_EFFECT)}."


def _guard_note(d: Decision, rs: List[Dict[str, Any]], adapter: Any) -> Optional[Note]:
    """The input guard's part in the pick: the guarded twin chosen (its cost inside the noise), or the guarded
    alternative and what it costs, or why it is not available; None without a guard axis or a twin."""
    axis = guard_axis(adapter)
    pick = d.recommended
    if not axis or pick is None:
        return None
    if _guarded(pick.record, axis):
        plain = sorted((c for c in d.candidates if not _guarded(c.record, axis)
                        and _same_config(c.record, pick.record, axis)), key=lambda c: c.cell_id)
        if not plain:
            return None
        u = plain[0]
        silent = silent_probes(u.record) or []
        without = (f"Without the guard the same config ({u.label}) returns a wrong matte without an error for: "
                   f"{_inputs(silent, u.record, adapter)}." if silent else f"Same config without the guard: {u.label}.")
        if pick.p50_ms is None or u.p50_ms is None:
            return Note("guard", "guarded twin chosen; no latency measured to compare.", (pick.cell_id, u.cell_id),
                        without)
        ratio = pick.p50_ms / u.p50_ms
        if ratio <= 1.0:
            return Note("guard", f"guarded twin chosen: it is also the faster of the pair ({_x(ratio)} p50).",
                        (pick.cell_id, u.cell_id), f"p50 {pick.p50_ms:.1f} ms guarded vs {u.p50_ms:.1f} ms. {without}")
        return Note("guard", f"guarded twin chosen: {_x(ratio)} p50, inside the noise ({_ci_words(pick)}).",
                    (pick.cell_id, u.cell_id),
                    f"p50 {pick.p50_ms:.1f} ms guarded vs {u.p50_ms:.1f} ms. {without} {_SLOWER_MEANS}")
    twins = sorted((r for r in rs if _guarded(r, axis) and _same_config(r, pick.record, axis)),
                   key=lambda r: str(r.get("cell_id")))
    if not twins:
        return _tied_guarded_note(d, axis)
    t = twins[0]
    tc = next((c for c in d.candidates if c.record is t), None)
    label = config_label(t)
    cells = (pick.cell_id, str(t.get("cell_id")))
    if tc is None:
        why = str(t.get("reason") or "").split("\n")[0][:200]
        at = f" at {t.get('stage')}" if t.get("stage") else ""
        return Note("guard", f"guarded twin not available: it does not pass ({t.get('status')}{at}).", cells,
                    f"{label}" + (f": {why}" if why else ""))
    if not _safer(t, pick.record):
        probed = silent_probes(t) is not None and silent_probes(pick.record) is not None
        why = "the probes show it no safer" if probed else "the probes did not run on both, so nothing shows it safer"
        return Note("guard", f"guarded twin not preferred: {why}.", cells, label)
    if tc.p50_ms is None or pick.p50_ms is None:
        return Note("guard", "guarded twin not preferred: no latency measured to show its cost is inside the noise.",
                    cells, label)
    return Note("guard", f"guarded twin not chosen: it costs {_x(tc.p50_ms / pick.p50_ms)} p50, beyond the noise "
                         f"({_ci_words(tc)}); ship it where the input is not checked before the model.", cells,
                f"{label}: p50 {tc.p50_ms:.1f} ms vs {pick.p50_ms:.1f} ms; it refuses the input this pick answers "
                f"wrongly. {_SLOWER_MEANS}")


def _tied_guarded_note(d: Decision, axis: str) -> Optional[Note]:
    """For a pick without a guarded twin: another configuration that is guarded, ties with the fastest and
    fails silently on fewer probes (the choice rule does not prefer it: it is not the pick's own config, so
    the tie-break decided); None where there is none."""
    pick = d.recommended
    if pick is None or pick.p50_ms is None:
        return None
    alts = [c for c in d.candidates if c is not pick and c.tie and c.p50_ms is not None
            and _guarded(c.record, axis) and _safer(c.record, pick.record)]
    if not alts:
        return None
    a = min(alts, key=lambda c: (c.p50_ms, c.cell_id))
    return Note("guard", f"no guarded twin of this config ran, but a guarded config ties on latency: {a.label} "
                         f"({_x(a.p50_ms / pick.p50_ms)} p50 of the pick's).", (pick.cell_id, a.cell_id),
                f"p50 {a.p50_ms:.1f} vs {pick.p50_ms:.1f} ms ({_ci_words(a)}); it refuses the input this pick answers "
                f"wrongly. The choice rule put it behind this pick among the ties (portability first, then p50).")


def _contract_note(d: Decision, rs: List[Dict[str, Any]], adapter: Any) -> Optional[Note]:
    """What the pick does with each probe's bad input (``probe_<name>`` fields): the silent failures and
    whether its guarded twin refuses them in the text, every outcome in the detail; None where the pick was
    not probed."""
    pick = d.recommended
    if pick is None or not pick.record.get("input_contract"):
        return None
    r = pick.record
    parts = []
    for outcome, words in _OUTCOME_WORDS:
        ps = [p for p in PROBES if (r.get(f"probe_{p}") or "not run") == outcome]
        if ps:
            parts.append(f"{words}: {_inputs(ps, r, adapter)}")
    known = {o for o, _ in _OUTCOME_WORDS}
    parts += [f"{r.get(f'probe_{p}')} on {_probe_input(p, r, adapter)}" for p in PROBES
              if (r.get(f"probe_{p}") or "not run") not in known]
    detail = "; ".join(parts)
    detail = detail[0].upper() + detail[1:] + "."
    silent = silent_probes(r) or []
    if not silent:
        return Note("input_contract", "no silent failure: every bad input probed is refused or handled.",
                    (pick.cell_id,), detail)
    text = f"returns a wrong matte without an error for: {_inputs(silent, r, adapter)}"
    cells = [pick.cell_id]
    axis = guard_axis(adapter)
    if axis and not _guarded(r, axis):
        twins = sorted((x for x in rs if _guarded(x, axis) and _same_config(x, r, axis)), key=lambda x: str(x.get("cell_id")))
        tag = (adapter.export_tags(twins[0]) if twins else "") or "guarded"
        if not twins:
            text += "; no guarded twin of this config ran"
        elif silent_probes(twins[0]) is None:
            text += f"; the {tag} twin was not probed"
            cells.append(str(twins[0].get("cell_id")))
        else:
            t = twins[0]
            refused = [p for p in silent if t.get(f"probe_{p}") == "refuses"]
            still = [p for p in silent if t.get(f"probe_{p}") == "garbage"]
            if len(refused) == len(silent):
                text += f"; the {tag} twin refuses such input"
            else:
                text += (f"; the {tag} twin refuses {_inputs(refused, t, adapter) or 'none of it'}"
                         + (f" and still answers {_inputs(still, t, adapter)} wrongly" if still else ""))
            if t.get("status") not in PASSING:
                text += f" (but does not pass: {t.get('status')})"
            cells.append(str(t.get("cell_id")))
    return Note("input_contract", text + ".", tuple(cells), detail)


def drift_margin(profile: Dict[str, Any], factor: Optional[float],
                 atol: float) -> Optional[Tuple[float, str, float, float, float]]:
    """The quantile closest to (or furthest past) the drift-profile rule's limit (harness/verdict.py
    :func:`~harness.verdict.drift_profile`): ``(cell / limit, output, quantile, cell drift, limit)`` with
    ``limit = max(factor * eager drift, atol)`` at each quantile of :data:`harness.verdict.DRIFT_QUANTILES`
    of each output; ``profile`` is the record's ``drift_profile`` (``{output: [cell quantiles, eager
    quantiles]}``, output units). A ratio above 1 breaks the rule. None for an empty profile."""
    worst = None
    f = factor or 1.0
    for name, pair in (profile or {}).items():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            continue
        for q, c, e in zip(DRIFT_QUANTILES, pair[0], pair[1]):
            limit = max(f * float(e), float(atol))
            ratio = float(c) / limit if limit > 0 else (0.0 if float(c) == 0 else float("inf"))
            if worst is None or ratio > worst[0]:
                worst = (ratio, str(name), float(q), float(c), limit)
    return worst


def _q(q: float) -> str:
    return "max" if q >= 1.0 else f"{100 * q:g} % quantile"


#: What "drift profile" means wherever the report names it.
DRIFT_PROFILE_DEFINITION = (
    "Drift profile: the median, 90 %, 99 %, 99.9 % quantiles and the max of |output − eager fp32| over the judged "
    "pixels, for the cell and for eager PyTorch in the cell's precision.")


def _parity_note(d: Decision, env: Dict[str, Any]) -> Optional[Note]:
    """For a pick in a reduced precision (not fp32): the parity rule it passed by, in plain words with its
    numbers (harness/verdict.py: the pixel rule against eager in its own precision or against eager fp32,
    else the drift-profile rule, whose recorded profile is checked against the rule again); None for fp32."""
    pick = d.recommended
    if pick is None or d.precision == "fp32":
        return None
    r, prec = pick.record, d.precision
    tol = (env.get("tolerances") or {}).get(prec) or {}
    atol, frac, factor = tol.get("atol"), tol.get("max_violation_frac"), tol.get("eager_drift_factor")
    known = atol is not None and frac is not None
    rule = (f"atol {atol:g}, at most {_pct(frac)} of pixels beyond it" if known
            else "tolerance not recorded: no environment.json")
    ref = str(r.get("parity_ref") or "")
    err, viol = r.get("judged_max_abs_pha", r.get("max_abs_pha")), r.get("violation_frac_pha")
    eager_viol, eager_max = r.get("eager_drift_violation_frac_pha"), r.get("eager_drift_max_abs_pha")
    if ref.endswith("drift profile"):
        prof = r.get("drift_profile") or {}
        worst = drift_margin(prof, factor, atol or 0.0) if prof else None
        text = f"passed by the {prec} drift-profile rule, not the pixel rule ({rule})"
        if _num(viol) and _num(eager_viol):
            text += (f": {_pct(viol)} of alpha pixels beyond atol is allowed because eager {prec} itself puts "
                     f"{_pct(eager_viol)} there (vs fp32)")
        if worst is not None and worst[0] <= 1.0:
            text += (f"; its drift from fp32 stays within {factor or 1:g}x eager {prec}'s at every quantile "
                     f"(closest: {_pct(worst[0])} of the limit)")
        elif worst is not None:
            text += (f"; but the recorded profile breaks the rule ({worst[1]} at the {_q(worst[2])}: {worst[3]:.3g} "
                     f"above its limit {worst[4]:.3g}): the record contradicts its verdict, re-run the cell")
        else:
            text += "; no drift profile was recorded to show it"
        detail = (f"{DRIFT_PROFILE_DEFINITION} The rule (harness/verdict.py) passes a cell in {prec} that is outside the "
                  f"pixel rule against both eager {prec} and eager fp32 when its refined patches match eager {prec}'s "
                  f"(no difference beyond a near-tie, no NaN/Inf) and, at every quantile of every judged output, its "
                  f"drift is at most max({factor or 1:g} x eager {prec}'s drift, atol): {prec} rounding moves alpha "
                  f"this far in PyTorch itself" + (f" (up to {eager_max:.3g})" if _num(eager_max) else "")
                  + ", so only a drift beyond the precision's own is the export's fault.")
        pha = prof.get("pha")
        if isinstance(pha, (list, tuple)) and len(pha) == 2:
            detail += (f" Alpha here: cell {'/'.join(f'{v:.3g}' for v in pha[0])} vs eager {prec} "
                       f"{'/'.join(f'{v:.3g}' for v in pha[1])}.")
        if worst is not None:
            detail += f" Closest to its limit: {worst[1]} at the {_q(worst[2])}, {worst[3]:.3g} of {worst[4]:.3g}."
        return Note("parity_rule", text + ".", (pick.cell_id,), detail)
    where = f"eager {prec} on the same inputs" if ref == prec else (
        "eager fp32" if ref == "fp32" else f"reference {ref or 'not recorded'}")
    text = f"passed the {prec} pixel rule against {where} ({rule})"
    if _num(err) and _num(viol):
        text += f": alpha max {err:.3g}, {_pct(viol)} of pixels beyond atol"
    detail = ""
    vs32 = r.get("max_abs_pha_vs_fp32")
    if ref == prec and _num(vs32):
        detail = (f"Against eager fp32 it moves alpha by up to {vs32:.3g}"
                  + (f", as eager {prec} itself does ({eager_max:.3g}): the precision's own drift, not the export's."
                     if _num(eager_max) else "."))
    return Note("parity_rule", text + ".", (pick.cell_id,), detail)


def pick_notes(d: Decision, rs: List[Dict[str, Any]], adapter: Any, env: Dict[str, Any]) -> List[Note]:
    """The safety notes of one decision's pick that its own target shows (:func:`decide` adds the one that
    needs the fp32 target too, :func:`precision_notes`): the input guard's part (:func:`prefer_guarded`), the
    input contract (probes) and, for a reduced precision, the parity rule it passed by. ``rs``: every
    non-skipped record of the target at the decision's shape. Empty for a blocked target."""
    if d.recommended is None:
        return []
    notes = [_guard_note(d, rs, adapter), _contract_note(d, rs, adapter), _parity_note(d, env)]
    return [n for n in notes if n is not None]


def _hardware(r: Dict[str, Any], env: Dict[str, Any]) -> str:
    """Where the cell ran, for a precision note: the GPU, or the CPU and its fp16 instructions
    (:data:`FP16_CPU_FLAGS` in ``environment.json`` ``cpu_flags``)."""
    if str(r.get("device") or "").startswith("cuda"):
        return f"GPU {env.get('cuda') or str(r.get('device'))[5:].strip() or '(not recorded)'}"
    cpu = env.get("cpu") or "(not recorded)"
    flags = env.get("cpu_flags")
    if not isinstance(flags, (list, tuple)):
        return f"CPU {cpu} (flags not recorded)"
    have = [f for f in FP16_CPU_FLAGS if f in flags]
    if any(f in flags for f in ("avx512_fp16", "amx_fp16")):
        return f"CPU {cpu}, which has native fp16 arithmetic ({', '.join(have)})"
    conv = "; f16c converts only" if "f16c" in flags else ""
    return f"CPU {cpu}, without native fp16 arithmetic (no avx512_fp16, no amx_fp16{conv})"


def precision_notes(decisions: List[Decision], env: Dict[str, Any]) -> None:
    """Add a ``slower_than_fp32`` note (first) to every reduced-precision pick that is slower than the fastest
    passing fp32 config of the same model, runtime and comparison shape: the bootstrap 95 % CI of the p50 ratio
    (:func:`p50_ratio_ci`, per-call samples) lies above ``1 + MIN_EFFECT`` (without samples, the plain ratio
    does); a reduced precision that is slower buys nothing on that runtime. Names both p50s and the hardware
    (``environment.json``: ``cpu``, ``cpu_flags``; ``cuda``). In place."""
    fp32 = {(d.model, d.runtime, d.shape): d for d in decisions if d.precision == "fp32" and d.candidates}
    for d in decisions:
        c = d.recommended
        f = fp32.get((d.model, d.runtime, d.shape))
        if d.precision == "fp32" or c is None or c.p50_ms is None or f is None:
            continue
        timed = [x for x in f.candidates if x.p50_ms is not None]
        if not timed:
            continue
        ref = min(timed, key=lambda x: (x.p50_ms, x.cell_id))
        a, b = _samples(c.record), _samples(ref.record)
        if a is not None and b is not None:
            ratio, lo, hi = p50_ratio_ci(a, b)
            slower, ci = lo > 1.0 + MIN_EFFECT, f", 95 % CI {lo:.2f}–{hi:.2f}"
        else:
            ratio, ci = c.p50_ms / ref.p50_ms, ", no per-call samples"
            slower = ratio > 1.0 + MIN_EFFECT
        if not slower:
            continue
        which = "the fp32 pick" if ref is f.recommended else f"the fp32 pick is {f.recommended.label}"
        text = (f"{d.precision} slower than fp32 here: do not ship. p50 {c.p50_ms:.1f} vs {ref.p50_ms:.1f} ms "
                f"({_x(ratio)}{ci}) on {_hardware(c.record, env)}.")
        detail = (f"fp32 reference: the fastest passing fp32 config at this shape, {ref.label} ({which}). Slower means "
                  f"the 95 % CI of the p50 ratio lies above {_x(1 + MIN_EFFECT)}.")
        d.notes.insert(0, Note("slower_than_fp32", text, (c.cell_id, ref.cell_id), detail))
