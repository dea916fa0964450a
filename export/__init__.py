"""Shipping a trained model: checkpoint -> ONNX (+INT8/fp16) -> onnxruntime inference.

Modules: ``metadata`` (what the .onnx carries), ``onnx_export`` (torch -> checked .onnx),
``parity`` (torch as the oracle), ``quantize`` (static INT8 QDQ), ``ort_session`` (providers, honestly
reported), ``predict`` (files -> top-k). CLIs: ``to_onnx.py``, ``infer.py``. The inference benchmark lives in
``experiments/bench/infer_cases.py``.
"""
