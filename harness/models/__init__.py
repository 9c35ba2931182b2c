"""Model adapters: what the harness needs to know about each model family (one module per model).

Today one model, BackgroundMattingV2 (:mod:`harness.models.bgmv2`): its I/O contract (input and output
names, ONNX dynamic axes) lives there, so exporters and runtimes are written against names, not against
BGMv2's ``(src, bgr) -> six tensors`` (see docs/architecture.md for what still moves here).
"""
