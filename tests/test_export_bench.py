"""experiments/bench/infer_cases.py: the `infer` benchmark section builds runnable, comparable cases (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.bench.infer_cases import infer_cases


def test_infer_cases_cover_every_runtime_and_batch(tmp_path):
    cases, info = infer_cases(tmp_path, image_size=32, batch_sizes=(1, 4), models=("cnn",), quick=True)
    names = [c.name for c in cases]
    assert names == [f"cnn batch {b}: {label}" for b in (1, 4) for label in
                     ("torch channels_last", "onnxruntime fp32 (CPU EP)", "onnxruntime INT8 QDQ (CPU EP)")], names
    assert all(c.baseline_label == "torch eager fp32" for c in cases)
    assert [c.items for c in cases] == [8, 8, 8, 4, 4, 4], [c.items for c in cases]
    for case in cases:
        out_base, out = case.baseline(), case.ours()
        base = out_base.numpy() if isinstance(out_base, torch.Tensor) else out_base
        ours = out.numpy() if isinstance(out, torch.Tensor) else out
        assert base.shape == ours.shape, f"{case.name}: {base.shape} vs {ours.shape}"
        if "INT8" not in case.name:
            assert np.abs(base - ours).max() < 1e-3, f"{case.name} differs from eager"
    assert info["cnn_provider"] == "CPUExecutionProvider" and info["image_size"] == 32, info
    # the recorded agreement, recomputed: the same random batch (the section's generator: seed 0, the batch-1
    # draw first) through torch eager and through the INT8 file in a plain onnxruntime session
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(0)
    torch.randn(1, 3, 32, 32, generator=gen)
    x = torch.randn(4, 3, 32, 32, generator=gen)
    int8_case = next(c for c in cases if c.name == "cnn batch 4: onnxruntime INT8 QDQ (CPU EP)")
    torch_top1 = int8_case.baseline().argmax(1).numpy()
    session = ort.InferenceSession(str(tmp_path / "cnn.int8.onnx"), providers=["CPUExecutionProvider"])
    int8_top1 = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    assert info["cnn_b4_int8_top1_agreement_random_inputs"] == float((int8_top1 == torch_top1).mean()), (
        info["cnn_b4_int8_top1_agreement_random_inputs"], int8_top1, torch_top1)
    with pytest.raises(ValueError, match="unknown benchmark models"):
        infer_cases(tmp_path, models=("resnet",))


def test_section_is_registered_in_the_benchmark_script():
    from experiments.benchmark import SECTIONS

    assert "infer" in SECTIONS, f"registered sections: {sorted(SECTIONS)}"
