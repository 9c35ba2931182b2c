"""Localise the first divergence of an ONNX graph that fails parity.

Every intermediate tensor of the failing graph and of a trusted reference graph (the fp32 ONNX export
of the same model configuration, which matches eager PyTorch to ~1e-5) is exposed as an extra graph
output; both run on onnxruntime's CPU provider on the same inputs, and tensors are compared by name in
topological order. The legacy exporter names tensors after the module path
(``/refiner/conv1/Conv_output_0``), so the same layer has the same name in both graphs. The first
tensor that differs beyond tolerance names the culprit: "first divergence: Conv /refiner/conv1/Conv,
max abs 0.31".

A float tensor diverges when ``max|a - b| > atol * max(1, max|b|)``; an integer or bool tensor (TopK
indices, NonZero coordinates) when any element or its shape differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Divergence:
    """The first node whose output differs from the reference: op type, node name, tensor name, the
    max abs difference (None for a shape mismatch) and how many tensors were compared before it."""

    op_type: str
    node: str
    tensor: str
    max_abs: Optional[float]
    compared: int

    def __str__(self) -> str:
        diff = "shape differs" if self.max_abs is None else f"max abs {self.max_abs:.3g}"
        return f"first divergence: {self.op_type} {self.node}, {diff} (after {self.compared} matching tensors)"


def expose_all(src: Path, dst: Path) -> List[Tuple[str, str, str]]:
    """Write a copy of ``src`` whose graph outputs include every typed intermediate tensor.

    Returns ``(tensor, node name, op type)`` in topological order."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(src)))
    g = model.graph
    typed = {vi.name: vi for vi in g.value_info}
    present = {o.name for o in g.output}
    order = []
    for node in g.node:
        for out in node.output:
            if out and node.op_type != "Constant":
                order.append((out, node.name or out, node.op_type))
                if out in typed and out not in present:
                    g.output.append(typed[out])
                    present.add(out)
    onnx.save(model, str(dst))
    return order


def _run(path: Path, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def first_divergence(candidate: Path, reference: Path, feeds: Dict[str, np.ndarray], atol: float,
                     workdir: Path) -> Optional[Divergence]:
    """Compare ``candidate`` with ``reference`` tensor by tensor; None when no shared tensor diverges.

    ``feeds`` are fp32 inputs; they are cast to each graph's input dtype.

    Raises:
        onnxruntime / onnx errors when a graph cannot be loaded or run (the caller records them).
    """
    import onnx

    workdir.mkdir(parents=True, exist_ok=True)
    order = expose_all(candidate, workdir / "candidate.all.onnx")
    expose_all(reference, workdir / "reference.all.onnx")

    def cast(path: Path) -> Dict[str, np.ndarray]:
        m = onnx.load(str(path), load_external_data=False)
        out = {}
        for i in m.graph.input:
            dt = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            out[i.name] = feeds[i.name].astype(dt)
        return out

    cand = _run(workdir / "candidate.all.onnx", cast(candidate))
    ref = _run(workdir / "reference.all.onnx", cast(reference))
    compared = 0
    for tensor, node, op in order:
        if tensor not in cand or tensor not in ref:
            continue
        a, b = np.asarray(cand[tensor]), np.asarray(ref[tensor])
        if a.shape != b.shape:
            return Divergence(op, node, tensor, None, compared)
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            a32, b32 = a.astype(np.float32), b.astype(np.float32)
            if a32.size == 0:
                continue
            diff = float(np.nanmax(np.abs(a32 - b32))) if np.isfinite(a32).all() else float("inf")
            scale = max(1.0, float(np.abs(b32).max()))
            if diff > atol * scale:
                return Divergence(op, node, tensor, diff, compared)
        elif not np.array_equal(a, b):
            return Divergence(op, node, tensor, float(np.abs(a.astype(np.int64) - b.astype(np.int64)).max()), compared)
        compared += 1
    return None
