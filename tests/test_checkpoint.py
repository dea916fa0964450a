"""core.train.checkpoint: weights_only round trip, atomic writes, clear errors for files that are not ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.model import build_cnn, make_spec
from core.train import CheckpointError, load_checkpoint, load_model, load_weights, make_payload, save_checkpoint
from core.train import checkpoint as ckpt


def _cnn(filters: int = 4, num_classes: int = 3):
    spec = make_spec(filters=filters, image_size=32, num_classes=num_classes, dense_units=8)
    return build_cnn(spec), {"kind": "cnn", "spec": spec.to_dict()}


def _payload(model, desc, epoch: int = 1, **kw):
    return make_payload(model, model_desc=desc, class_names=("a", "b", "c"),
                        preprocessing={"image_size": 32, "resize_size": None, "mean": (0.5,) * 3, "std": (0.25,) * 3},
                        train_config={"lr": 1e-3, "path": Path("/x")}, metrics={"val_acc": 0.5}, epoch=epoch, **kw)


def test_round_trip_is_weights_only_and_rebuilds_the_model(tmp_path):
    torch.manual_seed(0)
    model, desc = _cnn()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    path = tmp_path / "best.pt"
    save_checkpoint(path, _payload(model, desc, optimizer=opt))

    raw = torch.load(path, weights_only=True)  # the contract: loadable without trusting pickles
    assert raw["format"] == ckpt.CHECKPOINT_FORMAT, f"format key wrong: {raw['format']!r}"
    assert raw["class_names"] == ["a", "b", "c"], f"class names not stored as a list: {raw['class_names']!r}"
    assert raw["preprocessing"]["mean"] == [0.5, 0.5, 0.5], "tuples must be stored as plain lists"
    assert raw["train_config"]["path"] == "/x", "Paths must be stored as strings"
    assert raw["optimizer"]["state"], "optimizer state (Adam moments) missing"

    rebuilt, payload = load_model(path)
    assert not rebuilt.training, "load_model must return the model in eval mode"
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    assert torch.equal(rebuilt(x), model(x)), "rebuilt model gives different logits than the saved one"
    assert payload["epoch"] == 1, f"epoch {payload['epoch']} != 1"


def test_channels_last_weights_are_saved_contiguous(tmp_path):
    model, desc = _cnn()
    model.to(memory_format=torch.channels_last)
    save_checkpoint(tmp_path / "c.pt", _payload(model, desc))
    weight = load_checkpoint(tmp_path / "c.pt")["state_dict"]["features.0.conv.weight"]
    assert weight.is_contiguous(), "checkpoint weights should be plain contiguous (portable to ONNX/other code)"


def test_crash_mid_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model, desc = _cnn()
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(model, desc, epoch=1))
    before = path.read_bytes()

    def crashing_save(obj, handle):
        handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, _payload(model, desc, epoch=2))
    monkeypatch.undo()
    assert path.read_bytes() == before, "the old checkpoint was modified by a failed save"
    assert load_checkpoint(path)["epoch"] == 1, "old checkpoint no longer loads after a crashed save"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_save_refuses_a_payload_that_is_not_ours(tmp_path):
    with pytest.raises(CheckpointError, match="make_payload"):
        save_checkpoint(tmp_path / "x.pt", {"state_dict": {}})


class _Opaque:  # pickled by reference to this class: weights_only must refuse it
    pass


@pytest.mark.parametrize("kind", ["garbage", "truncated", "bare_state_dict", "list", "pickled_object",
                                  "foreign_dict", "wrong_format"])
def test_files_that_are_not_ours_raise_checkpoint_error(tmp_path, kind):
    model, desc = _cnn()
    path = tmp_path / f"{kind}.pt"
    expected = {
        "garbage": "not a torch checkpoint file", "truncated": "not a torch checkpoint file",
        "bare_state_dict": "bare state dict", "list": "holds a list",
        "pickled_object": r"references (tests\.)?test_checkpoint\._Opaque",
        "foreign_dict": "without a 'format' key", "wrong_format": "checkpoint format 'other/9'",
    }[kind]
    if kind == "garbage":
        path.write_bytes(b"this is a text file, not a checkpoint\n")
    elif kind == "truncated":
        save_checkpoint(path, _payload(model, desc))
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "bare_state_dict":
        torch.save(model.state_dict(), path)
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "pickled_object":
        torch.save({"format": ckpt.CHECKPOINT_FORMAT, "thing": _Opaque()}, path)
    elif kind == "foreign_dict":
        torch.save({"model": model.state_dict(), "epoch": 3}, path)
    else:
        payload = _payload(model, desc)
        payload["format"] = "other/9"
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path)
    assert "weights_only=False" not in str(info.value) and "safe_globals" not in str(info.value), (
        "never advise loading a file the user did not make with the unsafe loader or an allow-list")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_different_model_desc_names_both_descriptions(tmp_path):
    small, small_desc = _cnn(filters=4)
    big, big_desc = _cnn(filters=8)
    save_checkpoint(tmp_path / "small.pt", _payload(small, small_desc))
    payload = load_checkpoint(tmp_path / "small.pt")
    with pytest.raises(CheckpointError) as info:
        load_weights(big, payload, big_desc, source="small.pt")
    message = str(info.value)
    assert "different model" in message and "out_channels: 4 != 8" in message, \
        f"error should name both descriptions and where they differ, got: {message[:400]}"
    assert "size mismatch" not in message, "a raw torch shape-mismatch message leaked through"


def test_weights_that_do_not_fit_give_a_summary_not_a_traceback(tmp_path):
    small, small_desc = _cnn(filters=4)
    big, _ = _cnn(filters=8)
    save_checkpoint(tmp_path / "small.pt", _payload(small, small_desc))
    with pytest.raises(CheckpointError, match=r"shape mismatches \['features.0.conv.weight: \(4, 3, 3, 3\) vs "
                                              r"\(8, 3, 3, 3\)"):
        load_weights(big, load_checkpoint(tmp_path / "small.pt"))


def test_unknown_model_kind_is_rejected(tmp_path):
    model, _ = _cnn()
    with pytest.raises(CheckpointError, match=r"unknown model kind 'mlp'; expected one of \['cnn', 'backbone'\]"):
        _payload(model, {"kind": "mlp"})


def test_backbone_desc_rebuilds_torchvisions_architecture_without_weights():
    import torchvision

    model = ckpt.build_model({"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 7})
    reference = torchvision.models.mobilenet_v2(weights=None)
    reference.classifier[-1] = torch.nn.Linear(reference.classifier[-1].in_features, 7)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert got == want, "a backbone checkpoint must rebuild torchvision's mobilenet_v2 with a 7-way head"


def test_describe_difference_paths():
    diff = ckpt.describe_difference({"a": [1, {"b": 2}], "c": 3}, {"a": [1, {"b": 5}], "d": 3})
    assert diff == ["a[1].b: 2 != 5", "c: 3 != absent", "d: absent != 3"], f"unexpected diff {diff}"


def test_loading_a_backbone_checkpoint_logs_its_trained_weights_not_random_init(tmp_path, caplog):
    torch.manual_seed(0)
    model = ckpt.build_model({"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 3})
    desc = {"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 3}
    path = tmp_path / "partB.pt"
    save_checkpoint(path, _payload(model, desc))
    caplog.set_level("INFO")
    caplog.clear()  # only what loading logs
    loaded, _ = load_model(path)
    lines = [r.getMessage() for r in caplog.records if "weights:" in r.getMessage()]
    assert lines and all("random init" not in line and str(path) in line for line in lines), lines
    first = next(iter(model.state_dict()))
    assert torch.equal(loaded.state_dict()[first], model.state_dict()[first]), "and the saved weights are the ones used"
