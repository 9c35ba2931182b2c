"""Static analysis of an exported ONNX graph: op-type histogram, node count, file size, declared
dynamic dimensions, and *target readiness* flags with reasons.

The readiness rules come from what users hit deploying BackgroundMattingV2 (shared/spec/field-notes.md,
themes T1, T3, T5, T8); each reason names the op or property and the evidence:

- TensorRT: TopK with K > 3840 or a K that is not a constant (BMV2 #131, row 7); Resize scales computed
  from a graph input's values (a shape tensor to TensorRT, which must be Int32: RVM #219,
  NVIDIA/TensorRT#2301; spec rvm-model.md section 4); ``double`` tensors
  (TRT-port comments, row 8); one dynamic dim name on tensors whose sizes differ (RVM #238, row 20;
  FastDeploy PR#400, row 19); data-dependent NonZero / If / Loop (T1).
- CoreML (coremltools ONNX path): ScatterElements, If, Range "Unsupported ONNX ops" (BMV2 #104, row 5);
  RoiAlign/NonZero crops map poorly (BMV2 #41/#94, row 6).
- OpenCV DNN: the dynamic, data-dependent refiner graph fails to parse (BMV2 #20, row 1).
- TFLite (onnx2tf / openvino2tensorflow chains): static shapes and no data-dependent ops (rows 29, 38; T8).
- OpenVINO: ``If`` needs OpenVINO >= 2022.1 (BMV2 #46, openvino#11509, row 3) — informational.

Only ``onnx`` is needed (imported lazily).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

DATA_DEPENDENT = ("NonZero", "TopK", "If", "Loop", "Range", "ScatterND", "ScatterElements", "RoiAlign")
TRT_MAX_TOPK_K = 3840  # TensorRT TopK limit (MAX_TOPK_K), BMV2 #131
TARGETS = ("tensorrt", "coreml", "opencv_dnn", "tflite", "openvino")


@dataclass
class GraphReport:
    """Static facts about one ONNX file. Sizes in MiB; ``ops`` is an op-type -> count histogram;
    ``dynamic_dims`` maps each graph input/output to its dims (names for dynamic dims, ints otherwise);
    ``topk_k`` lists each TopK's K (None when K is not a constant); ``readiness`` maps a target to
    ``(ready, reasons)``."""

    nodes: int
    size_mib: float
    opset: Optional[int]
    ops: Dict[str, int]
    dynamic_dims: Dict[str, List[Any]]
    topk_k: List[Optional[int]]
    double_tensors: List[str]
    readiness: Dict[str, Tuple[bool, List[str]]] = field(default_factory=dict)
    # per Resize: where its scales/sizes come from: "constant", "shapes" (Shape arithmetic on tensors) or
    # "input:<name>" (computed from a graph input's values, e.g. RVM's float downsample_ratio)
    resize_scales: List[str] = field(default_factory=list)
    input_dtypes: Dict[str, str] = field(default_factory=dict)

    def data_dependent(self) -> Dict[str, int]:
        """Counts of the data-dependent op types present."""
        return {op: self.ops[op] for op in DATA_DEPENDENT if self.ops.get(op)}

    def as_record(self, prefix: str = "") -> Dict[str, Any]:
        """Flat fields for a results record (``onnx_ops`` as JSON, one ``ready_<target>`` column each)."""
        rec: Dict[str, Any] = {
            f"{prefix}onnx_nodes": self.nodes,
            f"{prefix}onnx_ops": json.dumps(dict(sorted(self.ops.items())), separators=(",", ":")),
        }
        if prefix:
            return rec
        rec.update({
            "onnx_size_mib": round(self.size_mib, 3),
            "onnx_opset": self.opset,
            "dynamic_dims": "; ".join(f"{k}[{','.join(map(str, v))}]" for k, v in self.dynamic_dims.items()),
            "data_dependent_ops": ", ".join(f"{k}x{v}" for k, v in self.data_dependent().items()),
            "topk_k": ",".join("dynamic" if k is None else str(k) for k in self.topk_k),
            "resize_scales": ", ".join(f"{k}x{v}" for k, v in sorted(Counter(self.resize_scales).items())),
            "input_dtypes": ", ".join(f"{k}:{v}" for k, v in self.input_dtypes.items()),
        })
        for target, (ok, reasons) in self.readiness.items():
            rec[f"ready_{target}"] = ok
            rec[f"ready_{target}_why"] = "; ".join(reasons)
        return rec


def record_fields() -> Dict[str, Any]:
    """Declaration of the fields :meth:`GraphReport.as_record` writes (``{name: type}``, :mod:`harness.record`),
    with and without the ``before_sim_`` prefix."""
    fields: Dict[str, Any] = {"onnx_nodes": int, "onnx_ops": str, "onnx_size_mib": float, "onnx_opset": int,
                              "dynamic_dims": str, "data_dependent_ops": str, "topk_k": str, "resize_scales": str,
                              "input_dtypes": str}
    for target in TARGETS:
        fields.update({f"ready_{target}": bool, f"ready_{target}_why": str})
    fields.update(before_sim_onnx_nodes=int, before_sim_onnx_ops=str)
    return fields


def _constants(graph) -> Dict[str, Any]:
    """Name -> numpy value of initializers and Constant-node outputs."""
    from onnx import numpy_helper

    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _dims(vi) -> List[Any]:
    t = vi.type.tensor_type
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]


def analyze(path: str, observed_shapes: Optional[Dict[str, Sequence[int]]] = None) -> GraphReport:
    """Analyse the ONNX file at ``path``.

    ``observed_shapes`` (output name -> shape seen at run time, with the graph inputs' shapes) lets the
    dynamic-dim check see whether one dim name stands for different sizes.

    Raises:
        onnx.onnx_cpp2py_export.checker.ValidationError / OSError: unreadable model file.
    """
    import onnx

    model = onnx.load(path, load_external_data=False)
    g = model.graph
    ops = Counter(n.op_type for n in g.node)
    consts = _constants(g)
    topk = []
    for n in g.node:
        if n.op_type == "TopK" and len(n.input) > 1:
            val = consts.get(n.input[1])
            topk.append(int(val.reshape(-1)[0]) if val is not None else None)
    doubles = sorted({vi.name for vi in list(g.value_info) + list(g.input) + list(g.output)
                      if vi.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE}
                     | {i.name for i in g.initializer if i.data_type == onnx.TensorProto.DOUBLE})
    dyn = {vi.name: _dims(vi) for vi in list(g.input) + list(g.output)}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    rep = GraphReport(len(g.node), os.path.getsize(path) / 2**20, opset, dict(ops), dyn, topk, doubles)
    rep.resize_scales = _resize_provenance(g, consts)
    names = {"FLOAT": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "BFLOAT16": "bfloat16"}
    inits = {x.name for x in g.initializer}
    rep.input_dtypes = {}
    for i in g.input:
        if i.name not in inits:
            kind = onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type)
            rep.input_dtypes[i.name] = names.get(kind, kind.lower())
    rep.readiness = readiness(rep, observed_shapes)
    return rep


def _resize_provenance(graph, consts: Dict[str, Any]) -> List[str]:
    """For each Resize: ``input:<name>`` when its scales/sizes are computed from a graph input's *values*
    (walking producers, but not through ``Shape``, whose output depends on a tensor's shape only), ``shapes``
    when computed from tensor shapes, ``constant`` when folded."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input} - set(consts)

    def origin(name: str, seen: set) -> str:
        if name in inputs:
            return f"input:{name}"
        if name in consts or not name or name in seen:
            return "constant"
        seen.add(name)
        node = producer.get(name)
        if node is None:
            return "constant"
        if node.op_type in ("Shape", "Size"):
            return "shapes"
        found = [origin(i, seen) for i in node.input]
        for kind in found:
            if kind.startswith("input:"):
                return kind
        return "shapes" if "shapes" in found else "constant"

    out = []
    for n in graph.node:
        if n.op_type == "Resize":
            srcs = [origin(i, set()) for i in list(n.input)[1:] if i]
            out.append(next((k for k in srcs if k.startswith("input:")), "shapes" if "shapes" in srcs else "constant"))
    return out


def _shared_dim_conflicts(dyn: Dict[str, List[Any]], observed: Optional[Dict[str, Sequence[int]]]) -> List[str]:
    if not observed:
        return []
    sizes: Dict[str, Dict[int, List[str]]] = {}
    for name, dims in dyn.items():
        shape = observed.get(name)
        if shape is None or len(shape) != len(dims):
            continue
        for axis, d in enumerate(dims):
            if isinstance(d, str) and d and d != "?":
                sizes.setdefault(d, {}).setdefault(int(shape[axis]), []).append(f"{name}[{axis}]")
    out = []
    for dim, by_size in sizes.items():
        if len(by_size) > 1:
            parts = ", ".join(f"{'/'.join(v)}={k}" for k, v in sorted(by_size.items()))
            out.append(f"dim name {dim!r} stands for different sizes ({parts}); TensorRT/ORT require one value "
                       f"per name (RVM #238)")
    return out


def readiness(rep: GraphReport, observed: Optional[Dict[str, Sequence[int]]] = None) -> Dict[str, Tuple[bool, List[str]]]:
    """Per-target ``(ready, reasons)`` from the graph facts (see the module docstring for the evidence)."""
    dd = rep.data_dependent()
    out: Dict[str, Tuple[bool, List[str]]] = {}
    trt: List[str] = []
    for k in rep.topk_k:
        if k is None:
            trt.append("TopK with a non-constant K (TensorRT needs a constant K <= 3840; BMV2 #131)")
        elif k > TRT_MAX_TOPK_K:
            trt.append(f"TopK K={k} > {TRT_MAX_TOPK_K} (TensorRT MAX_TOPK_K; BMV2 #131 — use thresholding or full mode)")
    if rep.double_tensors:
        trt.append(f"double tensors ({', '.join(rep.double_tensors[:3])}): TensorRT has no float64 (TRT-port notes)")
    for op in ("NonZero", "If", "Loop"):
        if dd.get(op):
            trt.append(f"{op}x{dd[op]}: data-dependent shapes/control flow (field notes T1)")
    trt += _shared_dim_conflicts(rep.dynamic_dims, observed)
    for src in sorted({k for k in rep.resize_scales if k.startswith("input:")}):
        name = src.split(":", 1)[1]
        trt.append(f"Resize scales computed from graph input {name!r} ({rep.input_dtypes.get(name, '?')}): TensorRT "
                   f"treats it as a shape tensor and refuses it ('network input that is shape tensor must have type "
                   f"Int32'; RVM #219, NVIDIA/TensorRT#2301) — bake the value into the graph")
    out["tensorrt"] = (not trt, trt)
    coreml = [f"{op}x{dd[op]}: unsupported or slow in coremltools (BMV2 #104, #94)"
              for op in ("ScatterElements", "ScatterND", "If", "Range", "NonZero", "RoiAlign", "Loop") if dd.get(op)]
    out["coreml"] = (not coreml, coreml)
    cv = [f"{op}x{dd[op]}: OpenCV DNN cannot parse the data-dependent refiner graph (BMV2 #20)"
          for op in DATA_DEPENDENT if dd.get(op)]
    out["opencv_dnn"] = (not cv, cv)
    dynamic = sorted({d for dims in rep.dynamic_dims.values() for d in dims if isinstance(d, str)})
    tfl = [f"{op}x{dd[op]}: data-dependent op (TFLite converters need static graphs; field notes T8)"
           for op in DATA_DEPENDENT if dd.get(op)]
    if dynamic:
        tfl.append(f"dynamic dims {dynamic}: export at a fixed size for TFLite/EdgeTPU chains (PINTO #373)")
    out["tflite"] = (not tfl, tfl)
    ov = [f"Ifx{dd['If']}: needs OpenVINO >= 2022.1 (BMV2 #46, openvino#11509)"] if dd.get("If") else []
    out["openvino"] = (True, ov)
    return out
