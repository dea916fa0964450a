"""export/infer.py and export/ort_session.py: predictions, labels, unreadable files, foreign models, providers.

The real-weights test runs the shared MobileNetV2 (ImageNet) through to_onnx.py and infer.py on the
shared photos and expects the top-1 indices listed in ../shared/photos/README.md.
"""

from __future__ import annotations

import csv
import importlib
import io
import re
import shutil

import onnx
import pytest
from test_export import CLASSES, tiny_bundle

from export.metadata import MissingMetadataError
from export.ort_session import CPU_EP, CUDA_EP, ProviderUnavailableError, create_session, session_metadata

infer = importlib.import_module("export.infer")
to_onnx = importlib.import_module("export.to_onnx")

REAL_PHOTOS = {"eskimo_dog.png": 248, "hog.jpg": 341, "horse_cart.jpg": 603, "refrigerator.jpg": 760,
               "samoyed.jpg": 258}




@pytest.fixture
def tiny(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_folder_with_labels_gives_accuracy_confusion_csv_and_provider(tiny, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    code = infer.main([str(tiny.onnx_path), str(tiny.data_dir / "val"), "--labels-from-folders", "--batch-size", "5",
                       "--top-k", "3", "--out", str(out), "--threads", "1"])
    text = capsys.readouterr().out
    assert code == 0, text
    rows = _rows(out)
    assert len(rows) == 128, f"expected 128 CSV rows, got {len(rows)}"
    correct = sum(int(r["correct"]) for r in rows)
    m = re.search(r"accuracy: ([\d.]+)% \(128 labelled images\)", text)
    assert m, text
    assert abs(float(m.group(1)) - 100 * correct / 128) < 0.01, f"printed {m.group(1)}% vs CSV {correct}/128"
    assert correct / 128 >= 0.9, f"accuracy {correct / 128:.2%} from a model trained to >= 90%"
    assert all(len(r["top_k"].split(";")) == 3 for r in rows), "top-k column must hold 3 entries"
    assert all(r["pred_label"] == CLASSES[int(r["pred_index"])] for r in rows), "pred_label must match pred_index"
    matrix = text.split("confusion matrix (rows: true, columns: predicted):\n")[1].splitlines()[1:1 + len(CLASSES)]
    counts = [[int(v) for v in line.split()[1:]] for line in matrix]
    assert sum(map(sum, counts)) == 128 and sum(counts[i][i] for i in range(len(CLASSES))) == correct, matrix
    assert re.search(r"throughput [\d.]+ img/s model only", text), text
    assert re.search(r"^provider: (CPU|CUDA)ExecutionProvider \(requested auto", text, re.M), text


def test_unreadable_images_are_reported_and_the_rest_predicted(tiny, tmp_path, capsys):
    folder = tmp_path / "imgs" / "Fungi"
    folder.mkdir(parents=True)
    for p in sorted((tiny.data_dir / "val" / "Fungi").glob("*.jpg"))[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "truncated.jpg").write_bytes((folder / p.name).read_bytes()[:200])
    (folder / "fake.png").write_text("this is text")
    (folder / "notes.txt").write_text("not an image extension: ignored, not reported")
    out = tmp_path / "pred.csv"
    code = infer.main([str(tiny.onnx_path), str(tmp_path / "imgs"), "--labels-from-folders", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    skipped = sorted(re.findall(r"skipped \(unreadable\): \S+/(\S+):", text))
    assert skipped == ["fake.png", "truncated.jpg"], f"skipped lines: {skipped}\n{text}"
    assert "3 predicted, 2 skipped" in text, text
    rows = _rows(out)
    assert [r["top_k"].startswith("SKIPPED") for r in rows].count(True) == 2, rows
    assert "accuracy: 100.00% (3 labelled images)" in text, text


def test_bad_inputs_are_clear_errors(tiny, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images here")
    assert infer.main([str(tiny.onnx_path), str(empty)]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert infer.main([str(tiny.onnx_path), str(tmp_path / "nope.jpg")]) == 2
    assert "no such image file or folder" in capsys.readouterr().err
    assert infer.main([str(tmp_path / "missing.onnx"), str(empty)]) == 2
    assert "ONNX model not found" in capsys.readouterr().err
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next((tiny.data_dir / "val" / "Aves").glob("*.jpg")), flat / "a.jpg")
    assert infer.main([str(tiny.onnx_path), str(flat), "--labels-from-folders"]) == 2
    assert "needs class sub-folders" in capsys.readouterr().err
    broken = tmp_path / "only_broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"nope")
    assert infer.main([str(tiny.onnx_path), str(broken)]) == 2
    assert "none of the 1 images could be decoded" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        infer.main([str(tiny.onnx_path), str(flat), "--top-k", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--top-k: 0 is out of range: expected a value in [1,inf)" in err


def test_foreign_onnx_needs_preprocessing_flags_then_works(tiny, tmp_path, capsys):
    proto = onnx.load(str(tiny.onnx_path))
    del proto.metadata_props[:]  # what a model exported by someone else looks like
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    val = str(tiny.data_dir / "val" / "Aves")
    assert infer.main([str(foreign), val]) == 2
    err = capsys.readouterr().err
    assert "--image-size" in err and "--mean" in err and "--std" in err, err
    assert infer.main([str(foreign), val, "--image-size", "32"]) == 2
    assert "--mean, --std were not given" in capsys.readouterr().err
    out = tmp_path / "p.csv"
    code = infer.main([str(foreign), val, "--image-size", "32", "--mean", "0.5", "0.5", "0.5",
                       "--std", "0.25", "0.25", "0.25", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = _rows(out)
    aves = str(CLASSES.index("Aves"))
    assert rows and all(r["pred_label"] == r["pred_index"] for r in rows), "without names, labels are indices"
    assert sum(r["pred_index"] == aves for r in rows) >= 0.9 * len(rows), [r["pred_index"] for r in rows]


def test_provider_auto_reports_what_actually_runs_and_keeps_stderr_quiet(tiny, capfd):
    session, report = create_session(tiny.onnx_path, "auto", intra_op_threads=1)
    assert report.active == tuple(session.get_providers()), "the report must come from session.get_providers()"
    err = capfd.readouterr().err
    assert "onnxruntime" not in err and "Failed to" not in err, f"onnxruntime noise leaked to stderr:\n{err}"
    if report.provider == CUDA_EP:  # a machine with a working GPU
        assert not report.fell_back and "CUDA not usable" not in report.line()
        return
    assert report.provider == CPU_EP and report.fell_back, report
    assert report.fallback_reason, "a fallback must say why CUDA did not run"
    assert report.line().startswith("provider: CPUExecutionProvider (requested auto; CUDA not usable: "), report.line()
    print("after", file=__import__("sys").stderr)
    assert "after" in capfd.readouterr().err, "stderr must be restored after session creation"


def test_provider_cuda_without_cuda_is_an_error_and_cpu_is_plain(tiny, capsys):
    cpu_session, cpu = create_session(tiny.onnx_path, "cpu", intra_op_threads=1)
    assert cpu.active == (CPU_EP,) and not cpu.fell_back and cpu.line() == f"provider: {CPU_EP} (requested cpu)"
    assert session_metadata(cpu_session).class_names == CLASSES
    _, auto = create_session(tiny.onnx_path, "auto", intra_op_threads=1)
    if auto.provider == CUDA_EP:
        pytest.skip("CUDA runs here: the no-CUDA error path cannot be exercised")
    with pytest.raises(ProviderUnavailableError, match="use --provider auto"):
        create_session(tiny.onnx_path, "cuda")
    assert infer.main([str(tiny.onnx_path), str(tiny.data_dir / "val"), "--provider", "cuda"]) == 2
    assert "--provider cuda was requested" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown provider 'tpu'"):
        create_session(tiny.onnx_path, "tpu")


def test_session_metadata_of_serialized_bytes_and_foreign_error(tiny):
    session, _ = create_session(tiny.onnx_path.read_bytes(), "cpu", intra_op_threads=1)
    assert session_metadata(session).preprocessing.image_size == 32
    proto = onnx.load(str(tiny.onnx_path))
    del proto.metadata_props[:]
    buf = io.BytesIO()
    onnx.save(proto, buf)
    foreign, _ = create_session(buf.getvalue(), "cpu", intra_op_threads=1)
    with pytest.raises(MissingMetadataError, match="--image-size"):
        session_metadata(foreign)


@pytest.mark.slow
def test_real_mobilenet_v2_on_shared_photos(shared_dir, tmp_path, capsys):
    """../shared weights -> checkpoint -> to_onnx.py (parity <= 1e-4 at batch 1/3/8 on real photos) -> infer.py."""
    import torchvision

    from core.data import Preprocessing
    from core.model import build_backbone
    from core.train import make_payload, save_checkpoint

    weights = shared_dir / "weights" / "mobilenet_v2_imagenet1k_from_qnnpack.pth"
    photos = shared_dir / "photos"
    if not weights.is_file() or not photos.is_dir():
        pytest.skip(f"{weights} or {photos} absent")
    model = build_backbone("mobilenet_v2", None, weights_file=weights).eval()
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    ckpt = tmp_path / "mnv2.pt"
    save_checkpoint(ckpt, make_payload(model, model_desc={"kind": "backbone", "arch": "mobilenet_v2",
                                                          "num_classes": 1000},
                                       class_names=categories, preprocessing=Preprocessing(224, 256),
                                       train_config={}, metrics={}, epoch=0))
    out = tmp_path / "mnv2.onnx"
    code = to_onnx.main(["--checkpoint", str(ckpt), "--out", str(out), "--parity-images", str(photos),
                         "--atol", "1e-4", "--rtol", "0", "--threads", "1"])
    text = capsys.readouterr().out
    assert code == 0, f"export/parity failed (tolerance 1e-4 absolute):\n{text}"
    assert "parity on 5 images at batch sizes [1, 3, 8]" in text, text

    csv_path = tmp_path / "pred.csv"
    code = infer.main([str(out), str(photos), "--out", str(csv_path), "--top-k", "3", "--threads", "1"])
    text = capsys.readouterr().out
    assert code == 0, text
    got = {r["path"].rsplit("/", 1)[-1]: int(r["pred_index"]) for r in _rows(csv_path)}
    assert got == REAL_PHOTOS, f"top-1 ImageNet indices {got} != README's {REAL_PHOTOS}"
    assert "samoyed.jpg: [258] Samoyed" in text, text
