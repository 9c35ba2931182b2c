"""Between-run latency: interleaved rounds and the spread between two measurements of the same thing.

A cell's latency burst (:mod:`harness.benchmark`) measures the spread *within* a few consecutive calls; its
p50 confidence interval says nothing of the spread *between* two moments of a run (another process's state
before it, frequency and cache state after a compile, which mode a runtime's thread pool came up in). On a
2-core VM that spread was 20-80 % while each burst's CI was a few percent wide (issue 29: an A/A run of the
same commit flagged "x1.43 slower"). This module holds the statistics that use the between-run spread
instead; the measuring is :mod:`harness.pool.rounds`.

**Rounds.** The finalists of a decision are loaded side by side in one fresh process and timed in rounds
``A B C, B C A, C A B, ...`` (the order rotates, so no candidate always follows the same one): each round
times every finalist with a short burst and keeps its median. A candidate's ratio to the reference is the
median over rounds of the *paired* ratios (same round, seconds apart, so a slow moment slows both), with
the distribution-free 95 % interval of that median (:func:`harness.benchmark.median_ci`, order statistics,
at least 6 rounds). That is the method of pyperf's ``compare_to`` (values from separate runs, not calls of
one burst) with the pairing of an A/B test; rounds continue until every interval is within
``+-target`` of its ratio, or ``cap_s`` seconds (then the interval is what it is and a candidate is called
slower only when the interval's low end clears ``1 + min_effect``).

**Between-run spread.** Every finalist is measured twice in one run: its burst in the worker (early) and
its rounds in the rounds process (later, a fresh load in another process). ``|log(burst p50 / rounds
p50)|`` over the finalists of one runtime is that runtime's measured between-run spread on this machine
(:func:`between_run_spread`); ``harness diff`` widens its latency test by it (:func:`slower_claim`), so two
runs of the same commit do not differ "significantly" by what two moments of one run differ by.

Torch-free; values layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .benchmark import median_ci

ROUNDS_FILE = "rounds.jsonl"
MIN_ROUNDS = 6  # the fewest rounds with a 95 % order-statistic interval of a median (binomial(6, 1/2))
Z95 = 1.959964


@dataclass(frozen=True)
class RoundsProtocol:
    """How finalists are re-measured (``settings.latency.rounds`` in matrix.yaml; seconds and call counts).

    ``cap_s``: seconds per group of finalists (0 turns rounds off); ``min_rounds``/``max_rounds``: rounds per
    group; ``warmup_runs``: untimed calls of each finalist at the start of each round; ``runs``: timed calls
    per finalist per round (their median is the round's value); ``target``: stop once every ratio's 95 %
    interval is within +- this fraction of it; ``finalists``: at most this many candidates besides the
    fastest; ``within``: only candidates whose burst p50 is within this factor of the fastest's."""

    cap_s: float = 0.0
    min_rounds: int = MIN_ROUNDS
    max_rounds: int = 30
    warmup_runs: int = 1
    runs: int = 3
    target: float = 0.03
    finalists: int = 4
    within: float = 1.6

    def __post_init__(self) -> None:
        if self.min_rounds < MIN_ROUNDS:
            raise ValueError(f"min_rounds={self.min_rounds}: a 95 % interval of a median needs >= {MIN_ROUNDS} rounds")
        if self.max_rounds < self.min_rounds:
            raise ValueError(f"max_rounds={self.max_rounds} < min_rounds={self.min_rounds}")
        if self.runs < 1:
            raise ValueError(f"runs={self.runs}: expected >= 1 timed call per round")

    @property
    def enabled(self) -> bool:
        return self.cap_s > 0


@dataclass
class GroupRounds:
    """The rounds of one group of finalists (one decision's, or one gate suspect alone).

    ``group``: what the group is (a decision's target and shape, or ``gate: <cell_id>``); ``cells``: cell ids
    in the order of the first round; ``round_ms``: ``{cell_id: [median ms of each round]}``; ``reference``:
    the cell with the lowest median over rounds; ``ratios``: ``{cell_id: [ratio, lo, hi]}`` against it (95 %
    interval over rounds, None under 6 rounds); ``stop``: ``target`` (every interval tight), ``cap`` (time
    cap), ``max`` (max_rounds) or ``error: ...``; ``seconds``: wall time of the rounds; ``loads``: how often
    each cell was loaded (1: side by side in one process)."""

    group: str
    cells: List[str]
    round_ms: Dict[str, List[float]] = field(default_factory=dict)
    reference: str = ""
    ratios: Dict[str, Optional[List[float]]] = field(default_factory=dict)
    stop: str = ""
    seconds: float = 0.0
    loads: int = 1
    runtime: Dict[str, str] = field(default_factory=dict)  # cell_id -> runtime name
    burst_p50_ms: Dict[str, Optional[float]] = field(default_factory=dict)
    cached: bool = False  # replayed from the cache (every cell of the group came from the result cache)

    @property
    def rounds(self) -> int:
        return min((len(v) for v in self.round_ms.values()), default=0)

    def p50_ms(self, cell_id: str) -> Optional[float]:
        """Median over rounds of ``cell_id``'s round values (ms), None without rounds."""
        v = self.round_ms.get(cell_id) or []
        return float(np.median(v)) if v else None

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def paired_ratio_ci(a_rounds: Sequence[float], b_rounds: Sequence[float]) -> Tuple[float, Optional[float], Optional[float]]:
    """``(ratio, lo, hi)`` of ``a`` to ``b`` from paired rounds (``a_rounds[i]`` and ``b_rounds[i]`` measured in
    the same round, ms): the median of the per-round ratios and its distribution-free 95 % interval (order
    statistics; ``lo``/``hi`` None under 6 rounds).

    Raises:
        ValueError: the lists differ in length, are empty, or hold a value <= 0.
    """
    a, b = np.asarray(a_rounds, dtype=float), np.asarray(b_rounds, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired rounds need two lists of one length (got {a.size} and {b.size})")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("paired rounds need positive latencies (ms)")
    r = a / b
    ci = median_ci(r.tolist())
    lo, hi = (ci if ci is not None else (None, None))
    return float(np.median(r)), lo, hi


def settle(g: GroupRounds) -> None:
    """Fill ``g.reference`` (lowest median over rounds) and ``g.ratios`` from ``g.round_ms``."""
    n = g.rounds
    if n == 0:
        g.reference, g.ratios = "", {}
        return
    med = {c: float(np.median(v[:n])) for c, v in g.round_ms.items() if v}
    g.reference = min(med, key=lambda c: (med[c], c))
    ref = g.round_ms[g.reference][:n]
    g.ratios = {}
    for c, v in g.round_ms.items():
        ratio, lo, hi = paired_ratio_ci(v[:n], ref)
        g.ratios[c] = [ratio, lo, hi] if lo is not None else [ratio, None, None]


def tight(g: GroupRounds, target: float) -> bool:
    """Whether every ratio's 95 % interval lies within ``+-target`` of the ratio (the reference's own is 1)."""
    if g.rounds < MIN_ROUNDS:
        return False
    for c, v in g.ratios.items():
        if c == g.reference:
            continue
        if v is None or v[1] is None or v[2] is None:
            return False
        ratio, lo, hi = v
        if max(ratio - lo, hi - ratio) > target * ratio:
            return False
    return True


def read_rounds(d: Path) -> List[GroupRounds]:
    """The rounds of the run in folder ``d`` (``rounds.jsonl``; [] when absent).

    Raises:
        ValueError: a line is not a rounds record (names the file and line)."""
    p = Path(d) / ROUNDS_FILE
    if not p.is_file():
        return []
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(GroupRounds(**json.loads(line)))
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}:{i}: not a rounds record ({e})") from None
    return out


def write_rounds(d: Path, groups: Iterable[GroupRounds]) -> Path:
    """Write ``groups`` to ``d/rounds.jsonl`` (replacing it); returns the path."""
    p = Path(d) / ROUNDS_FILE
    p.write_text("".join(json.dumps(g.as_dict()) + "\n" for g in groups))
    return p


def by_cell(groups: Iterable[GroupRounds]) -> Dict[str, GroupRounds]:
    """``{cell_id: the group that measured it}`` (a decision's group before a gate suspect's own)."""
    out: Dict[str, GroupRounds] = {}
    for g in groups:
        for c in g.cells:
            if g.round_ms.get(c):
                out.setdefault(c, g)
    return out


@dataclass(frozen=True)
class Spread:
    """The between-run spread of one runtime on this machine: ``n`` cells measured twice (burst and rounds),
    ``p90``: 90th percentile of ``|log(burst p50 / rounds p50)|``, ``sigma``: the normal sigma with that
    p90 (``p90 / 1.645``), in log units (0.1 ~ 10 %)."""

    n: int
    p90: float
    sigma: float


def between_run_spread(groups: Iterable[GroupRounds], min_cells: int = 3) -> Dict[str, Spread]:
    """``{runtime: Spread}`` from every cell whose burst p50 and rounds p50 are both known, plus ``"*"``: all
    runtimes pooled (used for a runtime with fewer than ``min_cells`` cells)."""
    logs: Dict[str, List[float]] = {}
    for g in groups:
        for c in g.cells:
            burst, rounds = g.burst_p50_ms.get(c), g.p50_ms(c)
            if burst and rounds and burst > 0 and rounds > 0:
                x = abs(math.log(burst / rounds))
                logs.setdefault(g.runtime.get(c, "?"), []).append(x)
                logs.setdefault("*", []).append(x)
    out = {}
    for rt, xs in logs.items():
        if len(xs) >= min_cells or rt == "*":
            p90 = float(np.quantile(xs, 0.9))
            out[rt] = Spread(len(xs), p90, p90 / 1.6449)
    return out


def spread_for(spreads: Dict[str, Spread], runtime: str) -> Optional[Spread]:
    """The runtime's own spread, else the pooled one, else None."""
    return spreads.get(runtime) or spreads.get("*")


def slower_claim(base_ms: float, new_ms: float, sigma_base: float, sigma_new: float, min_effect: float) -> Tuple[bool, float, float]:
    """Whether ``new_ms`` is slower than ``base_ms`` by more than ``min_effect`` beyond the between-run noise:
    the ratio's 95 % interval ``exp(log(new/base) +- 1.96 * sqrt(sigma_base^2 + sigma_new^2))`` lies above
    ``1 + min_effect``. Returns ``(claim, lo, hi)``.

    Raises:
        ValueError: a latency <= 0 or a negative sigma."""
    if base_ms <= 0 or new_ms <= 0:
        raise ValueError(f"latencies must be > 0 ms (got {base_ms!r}, {new_ms!r})")
    if sigma_base < 0 or sigma_new < 0:
        raise ValueError(f"sigmas must be >= 0 (got {sigma_base!r}, {sigma_new!r})")
    x = math.log(new_ms / base_ms)
    h = Z95 * math.hypot(sigma_base, sigma_new)
    lo, hi = math.exp(x - h), math.exp(x + h)
    return lo > 1.0 + min_effect, lo, hi


def spreads_dict(spreads: Dict[str, Spread]) -> Dict[str, Dict[str, float]]:
    return {k: asdict(v) for k, v in spreads.items()}


def spreads_from_dict(d: Optional[Dict[str, Any]]) -> Dict[str, Spread]:
    return {k: Spread(int(v["n"]), float(v["p90"]), float(v["sigma"])) for k, v in (d or {}).items()}
