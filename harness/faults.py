"""Test-only fault injection, so the tests can prove the harness survives what real exporters and
runtimes do to it (segfaults in onnxruntime, hanging session builds, memory blow-ups).

Set ``MATRIX_FAULTS`` to ``;``-separated entries ``<cell-id substring>@<stage>=<fault>``; when a worker
enters ``<stage>`` of a cell whose id contains the substring, it injects ``<fault>``:

- ``segfault``: dereference NULL (SIGSEGV)        - ``abort``: ``os.abort()`` (SIGABRT)
- ``hang``: sleep forever (hits the stage limit)  - ``oom``: allocate 256 MiB blocks until killed
- ``raise``: raise :class:`InjectedFault`          - ``exit``: ``os._exit(3)``
- ``perturb`` (stage ``export``, ONNX cells): scale one refiner Conv weight by 1.5 in the cell's copy of the
  artifact, so parity fails and the first-divergence localisation has something to find
- ``mutate-<name>`` (stage ``export``, ONNX cells): apply mutant ``<name>`` of :mod:`harness.mutants` (topk,
  conv, swap, nan, roialign, resize, threshold) to the cell's copy of the artifact

The coordinator honours ``<substring>@write=enospc``: appending that cell's record fails with ENOSPC,
as on a full disk. Unset (the normal case), this module does nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import time
from typing import List, Tuple

ENV = "MATRIX_FAULTS"
KINDS = ("segfault", "abort", "hang", "oom", "raise", "exit", "enospc", "perturb",
         "mutate-topk", "mutate-conv", "mutate-swap", "mutate-nan", "mutate-roialign", "mutate-resize", "mutate-threshold", "mutate-state")


class InjectedFault(RuntimeError):
    """Raised by the ``raise`` fault."""


def parse(spec: str) -> List[Tuple[str, str, str]]:
    """``"a@run=segfault;b@latency=hang"`` -> ``[("a", "run", "segfault"), ...]``.

    Raises:
        ValueError: an entry without ``@`` and ``=``, or an unknown fault kind.
    """
    out = []
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        try:
            target, rest = entry.split("@", 1)
            stage, kind = rest.split("=", 1)
        except ValueError:
            raise ValueError(f"{ENV} entry {entry!r}: expected <cell substring>@<stage>=<fault>") from None
        if kind not in KINDS:
            raise ValueError(f"{ENV} entry {entry!r}: unknown fault {kind!r}; expected one of {KINDS}")
        out.append((target, stage, kind))
    return out


def _active(cell_id: str, stage: str) -> List[str]:
    spec = os.environ.get(ENV)
    if not spec:
        return []
    return [k for t, s, k in parse(spec) if s == stage and t in cell_id]


def inject(cell_id: str, stage: str) -> None:
    """Inject the configured fault for (``cell_id``, ``stage``), if any (called at each stage start)."""
    for kind in _active(cell_id, stage):
        sys.stderr.write(f"[faults] injecting {kind} into {cell_id} at stage {stage}\n")
        sys.stderr.flush()
        if kind == "segfault":
            ctypes.string_at(0)
        elif kind == "abort":
            os.abort()
        elif kind == "exit":
            os._exit(3)
        elif kind == "hang":
            while True:
                time.sleep(3600)
        elif kind == "oom":
            hog = []
            while True:
                block = bytearray(256 * 2**20)
                block[:: 4096] = b"\x01" * len(block[:: 4096])  # touch every page
                hog.append(block)
        elif kind == "raise":
            raise InjectedFault(f"injected fault in stage {stage!r} of {cell_id}")


def write_fault(cell_id: str) -> None:
    """Raise ``OSError(ENOSPC)`` when a ``<substring>@write=enospc`` fault names ``cell_id``."""
    if "enospc" in _active(cell_id, "write"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def wants(cell_id: str, stage: str, kind: str) -> bool:
    """True when ``MATRIX_FAULTS`` asks for fault ``kind`` at ``stage`` of ``cell_id``."""
    return kind in _active(cell_id, stage)


def mutations(cell_id: str) -> List[str]:
    """Names of the ``mutate-<name>`` faults configured for ``cell_id`` (stage ``export``)."""
    return [k[len("mutate-"):] for k in _active(cell_id, "export") if k.startswith("mutate-")]


def perturb_onnx(path) -> str:
    """Scale the weight of the refiner's second Conv (``/conv2/Conv``, else the last Conv) by 1.5, writing
    a new file in place of ``path`` (a new inode: a hard link into the cache stays untouched).
    Returns the perturbed node's name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    node = next((n for n in convs if n.name == "/conv2/Conv"), convs[-1])
    for init in model.graph.initializer:
        if init.name == node.input[1]:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((arr * 1.5).astype(arr.dtype), init.name))
    tmp = str(path) + ".perturbed"
    onnx.save(model, tmp)
    os.replace(tmp, str(path))
    return node.name
