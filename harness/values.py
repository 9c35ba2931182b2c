"""Values every layer of the harness shares, importing nothing of the harness (the bottom layer).

- :data:`STAGES`: the one list of stage names (a cell's pipeline, ``stage_times``, ``limits.stage_timeout_s``,
  ``--stage-timeout``, the rules' ``stage``); :data:`DEFAULT_STAGE_TIMEOUT_S` their limits in seconds.
  ``check`` and ``simplify`` are parts of the ``export`` stage with their own limits (one artifact).
- :data:`PROBES`: the input-contract probes' names (harness/probes.py runs them).
- :data:`PRECISIONS`, :data:`STATUSES`: the axis values and cell statuses the judges and writers know.
- :class:`Tolerance`: the parity gate of one precision (``tolerances:`` in matrix.yaml).
- :func:`as_list`: a runtime's named outputs in a model's output order.

See docs/architecture.md for the layers above this one.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# The pipeline of one cell, in order, with each stage's default limit in seconds (harness/stages.py refuses to
# import unless its PIPELINE walks exactly these stages).
DEFAULT_STAGE_TIMEOUT_S: Dict[str, float] = {
    "model": 600.0, "export": 600.0, "check": 300.0, "simplify": 600.0, "load": 300.0, "run": 300.0,
    "analyze": 300.0, "parity": 300.0, "diagnose": 300.0, "latency": 600.0, "probe": 300.0}
STAGES = tuple(DEFAULT_STAGE_TIMEOUT_S)
# Parts of a stage that are timed and limited on their own but run inside it: {part: stage}.
SUB_STAGES = {"check": "export", "simplify": "export"}

# input-contract probes (harness/probes.py), in run order: the record's ``probe_<name>`` fields
PROBES = ("size", "dtype", "channels", "range")
PRECISIONS = ("fp32", "fp16")
STATUSES = ("pass", "fail", "xfail", "xpass", "skip", "error", "crash", "timeout")


class Strict(BaseModel):
    """Base of the frozen, extra-forbidding pydantic models of matrix.yaml (an unknown key is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Tolerance(Strict):
    """Parity gate for one precision (harness/parity.py).

    A pixel violates when ``|out - ref| > atol + rtol * |ref|``; an output passes when the fraction
    of violating judged pixels is <= ``max_violation_frac``. A refined cell may differ from eager's only
    where its coarse error is within ``tie_atol`` of the selection boundary (a near-tie); its pixels are
    then not judged. A reduced-precision cell is judged against eager PyTorch in its own precision (same
    inputs) and passes when that comparison, or the one against eager fp32, is within these limits, or
    else when its refined cells agree with eager's and its drift from fp32 stays within
    ``eager_drift_factor`` times eager's own drift at every quantile (harness/verdict.py:drift_profile).
    """

    atol: float = Field(ge=0)
    rtol: float = Field(0.0, ge=0)
    max_violation_frac: float = Field(0.0, ge=0, le=1)
    tie_atol: float = Field(1.0e-3, ge=0, le=0.1)
    eager_drift_factor: Optional[float] = Field(None, ge=1.0)


def as_list(outs: Mapping[str, np.ndarray], names: Sequence[str]) -> List[np.ndarray]:
    """The outputs in ``names`` order (positional consumers: parity, probes).

    Raises:
        KeyError: an output is missing (names it and what the runtime returned)."""
    missing = [n for n in names if n not in outs]
    if missing:
        raise KeyError(f"the runtime returned no output {missing[0]!r} (it returned {sorted(outs)})")
    return [outs[n] for n in names]
