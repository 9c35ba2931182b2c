"""Mutants of exported ONNX graphs: small, plausible exporter bugs that the parity judge must catch.

Each mutant rewrites the file in place through a new inode (a hard link into the cache stays intact)
and returns a one-line description. They serve the mutation tests (``tests/test_mutants.py``) and the
``mutate-<name>`` fault of :mod:`harness.faults` (``MATRIX_FAULTS="<cell>@export=mutate-topk"``), so a
matrix run judges a mutated artifact exactly as it would judge a real export.

- ``topk``: TopK keeps 15/16 of its K (2,000 -> 1,875 cells)      - ``conv``: one Conv weight x 1.01
- ``swap``: the ``pha`` and ``fgr`` outputs exchanged              - ``nan``: NaN written into 3 alpha pixels
- ``roialign``: RoiAlign's coordinate_transformation_mode flipped  - ``resize``: a bilinear Resize made nearest
- ``threshold``: the thresholding constant nudged by +0.01
- ``state``: every recurrent state output (``r<k>o``, RVM) scaled by 0.98 (a state-feedback bug: frame 1's
  matte is right, the error grows as the states are fed back)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Optional

MUTANTS = ("topk", "conv", "swap", "nan", "roialign", "resize", "threshold", "state")


class MutationError(ValueError):
    """The graph has no node the mutant needs (e.g. no RoiAlign in an unfold graph)."""


def _constant(model, name: str):
    """(numpy value, setter) of the initializer or Constant node called ``name``, or None."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            def set_init(arr, init=init):
                init.CopyFrom(numpy_helper.from_array(arr, init.name))
            return numpy_helper.to_array(init), set_init
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    def set_const(arr, attr=attr):
                        attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
                    return numpy_helper.to_array(attr.t), set_const
    return None


def _topk(model) -> str:
    for node in model.graph.node:
        if node.op_type == "TopK":
            found = _constant(model, node.input[1])
            if found is None:
                raise MutationError(f"TopK {node.name}: K is computed, not a constant")
            k, setter = found
            new = (k * 15) // 16
            setter(new.astype(k.dtype))
            return f"TopK {node.name}: K {int(k.reshape(-1)[0])} -> {int(new.reshape(-1)[0])}"
    raise MutationError("no TopK node (not a sampling-mode graph)")


def _conv(model) -> str:
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        raise MutationError("no Conv node")
    node = next((n for n in convs if "refiner" in n.name and "conv4" in n.name), convs[-1])
    found = _constant(model, node.input[1])
    if found is None:
        raise MutationError(f"Conv {node.name}: weight is not a constant")
    w, setter = found
    setter((w * 1.01).astype(w.dtype))
    return f"Conv {node.name}: weight x 1.01"


def _swap(model) -> str:
    from onnx import helper

    outs = {o.name: o for o in model.graph.output}
    if "pha" not in outs or "fgr" not in outs:
        raise MutationError("graph outputs are not named pha/fgr")
    inner = {"pha": "mutant_pha_inner", "fgr": "mutant_fgr_inner"}
    for node in model.graph.node:  # every use, so an output that feeds another (fgr = src * pha) stays acyclic
        for names in (node.input, node.output):
            for k, name in enumerate(names):
                if name in inner:
                    names[k] = inner[name]
    model.graph.node.extend([helper.make_node("Identity", [inner["fgr"]], ["pha"], name="mutant_swap_pha"),
                             helper.make_node("Identity", [inner["pha"]], ["fgr"], name="mutant_swap_fgr")])
    pha_type, fgr_type = outs["pha"].type.SerializeToString(), outs["fgr"].type.SerializeToString()
    outs["pha"].type.ParseFromString(fgr_type)
    outs["fgr"].type.ParseFromString(pha_type)
    return "outputs pha and fgr swapped"


def _nan(model) -> str:
    import numpy as np
    from onnx import helper, numpy_helper

    out = next((o for o in model.graph.output if o.name == "pha"), None)
    if out is None:
        raise MutationError("no pha output")
    for node in model.graph.node:
        for k, name in enumerate(node.output):
            if name == "pha":
                node.output[k] = "pha_before_nan"
    dtype = np.float16 if out.type.tensor_type.elem_type == 10 else np.float32
    idx = numpy_helper.from_array(np.array([[0, 0, 5, 7], [0, 0, 10, 20], [0, 0, 30, 40]], dtype=np.int64), "nan_idx")
    upd = numpy_helper.from_array(np.full(3, np.nan, dtype=dtype), "nan_upd")
    model.graph.initializer.extend([idx, upd])
    model.graph.node.append(helper.make_node("ScatterND", ["pha_before_nan", "nan_idx", "nan_upd"], ["pha"],
                                             name="mutant_nan"))
    return "NaN written into 3 alpha pixels (ScatterND before the pha output)"


def _roialign(model) -> str:
    from onnx import helper

    for node in model.graph.node:
        if node.op_type == "RoiAlign":
            attrs = {a.name: a for a in node.attribute}
            cur = attrs["coordinate_transformation_mode"].s.decode() if "coordinate_transformation_mode" in attrs else "half_pixel"
            new = "half_pixel" if cur == "output_half_pixel" else "output_half_pixel"
            if "coordinate_transformation_mode" in attrs:
                node.attribute.remove(attrs["coordinate_transformation_mode"])
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", new))
            return f"RoiAlign {node.name}: coordinate_transformation_mode {cur} -> {new}"
    raise MutationError("no RoiAlign node (crop_method is not roi_align)")


def _resize(model) -> str:
    for node in model.graph.node:
        if node.op_type == "Resize":
            for a in node.attribute:
                if a.name == "mode" and a.s.decode() == "linear":
                    a.s = b"nearest"
                    return f"Resize {node.name}: mode linear -> nearest"
    raise MutationError("no linear Resize node")


def _threshold(model) -> str:
    for node in model.graph.node:
        if node.op_type == "Greater":
            found = _constant(model, node.input[1])
            if found is None:
                continue
            value, setter = found
            if value.size == 1 and 0.0 < float(value.reshape(-1)[0]) < 1.0:
                setter((value + 0.01).astype(value.dtype))
                return f"Greater {node.name}: threshold {float(value.reshape(-1)[0]):g} -> {float(value.reshape(-1)[0]) + 0.01:g}"
    raise MutationError("no Greater-than-threshold node (not a thresholding-mode graph)")


def _state(model) -> str:
    import re

    import numpy as np
    from onnx import helper, numpy_helper

    outs = [o for o in model.graph.output if re.fullmatch(r"r\d+o", o.name)]
    if not outs:
        raise MutationError("no recurrent state outputs (r<k>o)")
    for out in outs:
        dtype = np.float16 if out.type.tensor_type.elem_type == 10 else np.float32
        inner = f"{out.name}_before_mutant"
        for node in model.graph.node:
            for names in (node.input, node.output):
                for k, name in enumerate(names):
                    if name == out.name:
                        names[k] = inner
        model.graph.initializer.append(numpy_helper.from_array(np.array(0.98, dtype=dtype), f"{out.name}_mutant_gain"))
        model.graph.node.append(helper.make_node("Mul", [inner, f"{out.name}_mutant_gain"], [out.name],
                                                 name=f"mutant_state_{out.name}"))
    return f"recurrent states {', '.join(o.name for o in outs)} x 0.98"


_APPLY: Dict[str, Callable] = {"state": _state, "topk": _topk, "conv": _conv, "swap": _swap, "nan": _nan, "roialign": _roialign,
                               "resize": _resize, "threshold": _threshold}


def mutate_onnx(path, kind: str, out: Optional[Path] = None) -> str:
    """Apply mutant ``kind`` (one of :data:`MUTANTS`) to the ONNX file ``path`` (in place, through a new
    inode, or into ``out``); returns what was changed.

    Raises:
        ValueError: unknown ``kind``. MutationError: the graph lacks the node the mutant needs.
    """
    import onnx

    if kind not in _APPLY:
        raise ValueError(f"unknown mutant {kind!r}; expected one of {MUTANTS}")
    model = onnx.load(str(path))
    what = _APPLY[kind](model)
    target = Path(out) if out is not None else Path(path)
    tmp = target.with_name(target.name + ".mutant-tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, target)
    return what
