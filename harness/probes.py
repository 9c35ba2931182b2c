"""Input-contract probes: what an exported artifact does with inputs the model must not take.

Eager PyTorch refuses these inputs (``model.matting._check_inputs`` and ``check_input_values``); an
exported graph checks only what its runtime checks on its own. Each probe feeds one bad input through the
cell's loaded runtime, exactly as a user's call would, and classifies what happened:

=========  ===================================================================================
refuses    the runtime raised an error (the first line is recorded): loud, the safe outcome
pads       (``size``) it ran and its alpha/foreground equal its own run on the input zero-padded to
           multiples of 4 and cropped back: what ``--pad`` does, so the graph is usable as is
converts   (``dtype``) it ran and its outputs equal the run with the right dtype: a silent but
           harmless conversion
garbage    it ran without a word and returned outputs that are wrong (other shape, or alpha unlike
           the reference): the silent failure this module exists to find
crash      the worker process died in the probe (recorded by the coordinator, harness/pool.py)
timeout    the probe ran past ``limits.stage_timeout_s.probe``
=========  ===================================================================================

Probes (``settings.input_probes``):

- ``size``: H+2 x W+2 (not multiples of 4; replicate-padded real image), as in the report of a
  290x514 input that scatter_element graphs accept and answer with alpha off by up to 1.0 (issue 15);
- ``dtype``: float64 for an fp32 artifact (numpy's default), float32 for an fp16 one;
- ``channels``: RGBA (4 channels) src and bgr;
- ``range``: 0-255 values (the 8-bit image not divided by 255).

"Equal" means: at most 1 % of the alpha pixels differ by more than 0.05 (:data:`AGREE_ABS`,
:data:`AGREE_FRAC`) — far looser than parity, since only the coarse distinction usable / garbage is made
here (a refined near-tie patch can differ by up to 1.0 on a handful of pixels), and far tighter than the
95.8 % of pixels a wrong-size graph gets wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .values import PROBES

if TYPE_CHECKING:  # torch is imported by the probes that build tensors: records and the coordinator need
    import torch   # PROBES, record_fields and mark_abnormal without it

#: Outcomes, safest first; ``garbage`` is a silent failure.
OUTCOMES: Tuple[str, ...] = ("refuses", "pads", "converts", "garbage", "crash", "timeout")
AGREE_ABS = 0.05
AGREE_FRAC = 0.01

RunFn = Callable[["torch.Tensor", "torch.Tensor"], Sequence[np.ndarray]]


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome (one of :data:`OUTCOMES`) and what was seen, in words."""

    probe: str
    outcome: str
    detail: str


_LAST_ERROR = re.compile(r"(?:builtins\.)?[A-Za-z_.]*(?:Error|Exception): ")


def _first_line(e: BaseException, limit: int = 240) -> str:
    """``Type: message`` on one line; for a TorchScript interpreter traceback (Python or the libtorch-cpp
    runner), the exception at its end, which is what the user needs to read."""
    text = " ".join(str(e).split())
    if "Traceback of TorchScript" in text:
        found = list(_LAST_ERROR.finditer(text))
        if found:
            text = text[found[-1].start():]
    return f"{type(e).__name__}: {text[:limit]}"


def _disagreement(a: np.ndarray, b: np.ndarray) -> Tuple[float, float]:
    """(max abs difference, fraction of elements beyond :data:`AGREE_ABS`); NaN/Inf count as differing."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = np.abs(a - b)
    d[~np.isfinite(d)] = np.inf
    return float(np.max(d)) if d.size else 0.0, float(np.mean(d > AGREE_ABS)) if d.size else 0.0


def _agrees(a: np.ndarray, b: np.ndarray) -> Tuple[bool, str]:
    mx, frac = _disagreement(a, b)
    return frac <= AGREE_FRAC, f"alpha differs by up to {mx:.3g} on {100 * frac:.1f} % of pixels"


def _call(run: RunFn, src: torch.Tensor, bgr: torch.Tensor) -> Tuple[Optional[List[np.ndarray]], str]:
    try:
        return [np.asarray(o) for o in run(src, bgr)], ""
    except Exception as e:  # noqa: BLE001 - a refusal is the outcome being measured
        return None, _first_line(e)


def probe_size(run: RunFn, src: torch.Tensor, bgr: torch.Tensor) -> ProbeResult:
    """``src``/``bgr`` ``(B,3,H,W)`` (H, W multiples of 4) replicate-padded to H+2 x W+2."""
    import torch.nn.functional as F
    h, w = src.shape[-2] + 2, src.shape[-1] + 2
    s2 = F.pad(src.float(), (0, 2, 0, 2), mode="replicate").to(src.dtype)
    b2 = F.pad(bgr.float(), (0, 2, 0, 2), mode="replicate").to(bgr.dtype)
    outs, err = _call(run, s2, b2)
    if outs is None:
        return ProbeResult("size", "refuses", f"{h}x{w}: {err}")
    pha = outs[0]
    if tuple(pha.shape[-2:]) != (h, w):
        return ProbeResult("size", "garbage", f"{h}x{w} input: ran and returned {pha.shape[-2]}x{pha.shape[-1]} alpha")
    padded, err = _call(run, F.pad(s2, (0, 2, 0, 2)), F.pad(b2, (0, 2, 0, 2)))
    if padded is None:
        return ProbeResult("size", "garbage", f"{h}x{w} input: ran without an error, but its zero-padded "
                                              f"{h + 2}x{w + 2} version fails ({err}), so nothing vouches for it")
    ok, how = _agrees(pha, padded[0][..., :h, :w])
    if ok:
        return ProbeResult("size", "pads", f"{h}x{w} input: {how} vs its own run zero-padded to {h + 2}x{w + 2}")
    return ProbeResult("size", "garbage", f"{h}x{w} input: ran without an error; {how} vs its own run "
                                          f"zero-padded to {h + 2}x{w + 2} and cropped back")


def probe_dtype(run: RunFn, src: torch.Tensor, bgr: torch.Tensor, outs: Sequence[np.ndarray]) -> ProbeResult:
    """float64 inputs for an fp32 artifact, float32 for an fp16 one; compared with ``outs`` (the right dtype)."""
    import torch
    wrong = torch.float32 if src.dtype == torch.float16 else torch.float64
    name = str(wrong).replace("torch.", "")
    got, err = _call(run, src.to(wrong), bgr.to(wrong))
    if got is None:
        return ProbeResult("dtype", "refuses", f"{name}: {err}")
    if tuple(got[0].shape) != tuple(np.shape(outs[0])):
        return ProbeResult("dtype", "garbage", f"{name}: ran and returned alpha of shape {list(got[0].shape)}")
    ok, how = _agrees(got[0], outs[0])
    if ok:
        return ProbeResult("dtype", "converts", f"{name}: ran, converted silently ({how} vs the "
                                                f"{str(src.dtype).replace('torch.', '')} run)")
    return ProbeResult("dtype", "garbage", f"{name}: ran without an error; {how} vs the right dtype")


def probe_channels(run: RunFn, src: torch.Tensor, bgr: torch.Tensor) -> ProbeResult:
    """RGBA inputs: an opaque alpha channel appended to ``src`` and ``bgr``."""
    import torch
    ones = torch.ones_like(src[:, :1])
    got, err = _call(run, torch.cat([src, ones], 1), torch.cat([bgr, ones], 1))
    if got is None:
        return ProbeResult("channels", "refuses", f"4 channels: {err}")
    return ProbeResult("channels", "garbage", f"4 channels (RGBA): ran without an error and returned "
                                              f"alpha of shape {list(got[0].shape)}")


def probe_range(run: RunFn, src: torch.Tensor, bgr: torch.Tensor, outs: Sequence[np.ndarray]) -> ProbeResult:
    """0-255 values (``src * 255``); compared with ``outs`` from the [0, 1] inputs."""
    got, err = _call(run, src * 255, bgr * 255)
    if got is None:
        return ProbeResult("range", "refuses", f"0-255 values: {err}")
    if tuple(got[0].shape) != tuple(np.shape(outs[0])):
        return ProbeResult("range", "garbage", f"0-255 values: ran and returned alpha of shape {list(got[0].shape)}")
    ok, how = _agrees(got[0], outs[0])
    # a model that gives the same matte for x and 255x would be normalising internally: not garbage
    return ProbeResult("range", "converts" if ok else "garbage",
                       f"0-255 values: ran without an error; {how} vs the [0, 1] input")


def run_probes(run: RunFn, src: torch.Tensor, bgr: torch.Tensor, outs: Sequence[np.ndarray],
               probes: Sequence[str] = PROBES,
               on_probe: Callable[[str, List[ProbeResult]], None] = lambda name, done: None) -> List[ProbeResult]:
    """Run ``probes`` (names from :data:`PROBES`) through ``run`` (the cell's runtime call: ``(B,3,H,W)``
    tensors of the artifact's dtype -> outputs, ``pha`` first). ``outs`` are the outputs of the valid
    inputs ``src``/``bgr``. ``on_probe(name, done)`` is called before each with the results so far (the
    worker tells the coordinator, so a probe that kills the process is recorded as ``crash`` for that
    probe only and the cell keeps its verdict).

    Raises:
        ValueError: an unknown probe name (names the accepted ones).
    """
    bad = [p for p in probes if p not in PROBES]
    if bad:
        raise ValueError(f"unknown input probe {bad[0]!r}; expected some of {list(PROBES)}")
    results = []
    for name in probes:
        on_probe(name, list(results))
        if name == "size":
            results.append(probe_size(run, src, bgr))
        elif name == "dtype":
            results.append(probe_dtype(run, src, bgr, outs))
        elif name == "channels":
            results.append(probe_channels(run, src, bgr))
        else:
            results.append(probe_range(run, src, bgr, outs))
    return results


def record_fields(results: Sequence[ProbeResult], probes: Sequence[str] = PROBES) -> Dict[str, object]:
    """Record fields: ``probe_<name>`` (outcome), ``probe_details`` (``{name: detail}``) and
    ``input_contract``, e.g. ``"size garbage · dtype refuses · channels refuses · range garbage"``;
    probes that did not run (the process died before them) are ``not run``."""
    by = {r.probe: r for r in results}
    fields: Dict[str, object] = {}
    for p in probes:
        fields[f"probe_{p}"] = by[p].outcome if p in by else "not run"
    fields["probe_details"] = {p: by[p].detail for p in probes if p in by}
    fields["input_contract"] = " · ".join(f"{p} {fields[f'probe_{p}']}" for p in probes)
    silent = [p for p in probes if p in by and by[p].outcome == "garbage"]
    fields["silent_failures"] = len(silent)
    return fields


def mark_abnormal(rec: Dict[str, object], outcome: str, why: str, probes: Sequence[str] = PROBES) -> Dict[str, object]:
    """Finish a partial record whose worker died (``outcome`` "crash") or timed out in probe
    ``rec["probing"]``: that probe gets ``outcome`` with ``why``, later ones ``not run``; the cell's
    status stays the one decided before probing."""
    name = str(rec.pop("probing"))
    details = dict(rec.get("probe_details") or {})
    details[name] = why
    done = [ProbeResult(p, str(rec[f"probe_{p}"]), details.get(p, "")) for p in probes
            if p != name and rec.get(f"probe_{p}") not in (None, "not run")]
    rec.update(record_fields(done + [ProbeResult(name, outcome, why)], probes))
    rec["probe_abnormal"] = f"{outcome} in probe {name}"  # not cached: a dead worker may not be the probe's doing
    return rec
