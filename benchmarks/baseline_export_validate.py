"""Baseline for the harness-speed benchmark: how users check one configuration today.

One fresh Python process per configuration, as with the official ``export_onnx.py --validate`` /
``export_torchscript.py`` workflow: import torch, build the model with the configuration's knobs, load
the weights, export, load the artifact in its runtime, run it once on a real sample and compare with
eager PyTorch. Nothing is shared between configurations.

    python benchmarks/baseline_export_validate.py --weights W.pth --cell CELL_ID --out DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--cell", required=True, help="a cell id of matrix.yaml (the configuration to check)")
    p.add_argument("--profile", default="ci")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from harness.config import NA, expand, load_config
    from harness.exporters import export_model
    from harness.inputs import batch_of
    from model.bgmv2 import MattingRefine

    plan = expand(load_config(ROOT / "matrix.yaml"), a.profile)
    cell = next(c for c in plan.cells if c.cell_id == a.cell)
    s = plan.settings
    dt = {"fp32": torch.float32, "fp16": torch.float16}[cell.precision]
    model = MattingRefine(
        cell.backbone, backbone_scale=s.backbone_scale, refine_mode=cell.refine_mode,
        refine_sample_pixels=s.refine_sample_pixels, refine_threshold=s.refine_threshold,
        refine_kernel_size=s.refine_kernel_size, refine_prevent_oversampling=s.refine_prevent_oversampling,
        refine_patch_crop_method="unfold" if cell.crop_method == NA else cell.crop_method,
        refine_patch_replace_method="scatter_nd" if cell.replace_method == NA else cell.replace_method,
    )
    model.load_state_dict(torch.load(a.weights, weights_only=True))
    model = model.to(dt).eval()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    _, src, bgr = batch_of(cell.resolution, cell.batch)
    src, bgr = src.to(dt), bgr.to(dt)
    with torch.inference_mode():
        ref = [o.float().numpy() for o in model(src, bgr)]
    try:
        if cell.exporter == "torchscript":
            path = out / "model.pt"
            export_model("torchscript", model, path, ())
            m = torch.jit.load(str(path))
            m.refine_mode = cell.refine_mode
            with torch.inference_mode():
                outs = [o.float().numpy() for o in m(src, bgr)]
        else:
            import onnxruntime as ort

            path = out / "model.onnx"
            _, esrc, ebgr = batch_of(tuple(s.export_resolution), 1)
            export_model("onnx", model, path, (esrc.to(dt), ebgr.to(dt)), cell.opset)
            if cell.simplify:
                import onnx
                import onnxsim

                simp, _ = onnxsim.simplify(onnx.load(str(path)))
                onnx.save(simp, str(path))
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            outs = [np.asarray(o, dtype=np.float32) for o in sess.run(None, {"src": src.numpy(), "bgr": bgr.numpy()})]
        err = max(float(np.abs(o - r).max()) for o, r in zip(outs, ref))
        print(f"{a.cell}: validated, max abs error {err:.2e}, {time.perf_counter() - t0:.1f} s")
    except Exception as e:  # noqa: BLE001 - the baseline reports, like the official script, and moves on
        print(f"{a.cell}: failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
