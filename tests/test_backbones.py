"""Backbones by name: heads per family, block layouts, weights (DEFAULT cache, file, none), preprocessing.

No network: the DEFAULT path is tested with a file placed where torch hub caches it (torch only
checks the SHA-256 prefix while downloading, never for a cached file), and the offline failure by
making the download boundary (``torch.hub.download_url_to_file``) raise.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from core.model import (
    WeightsUnavailableError,
    backbone_preprocessing,
    build_backbone,
    check_layout,
    family_of,
    layout_of,
    supported_archs,
    weights_cache_path,
)

# arch -> (family, head in_features, number of blocks, input side for a forward pass)
FAMILIES = {
    "vgg16": ("vgg", 4096, 7, 32),
    "alexnet": ("alexnet", 4096, 7, 64),
    "resnet18": ("resnet", 512, 5, 32),
    "mobilenet_v2": ("mobilenet_v2", 1280, 19, 32),
    "mobilenet_v3_small": ("mobilenet_v3", 1024, 14, 32),
    "efficientnet_b0": ("efficientnet", 1280, 9, 32),
    "convnext_tiny": ("convnext", 768, 5, 32),
    "vit_b_16": ("vit", 768, 13, 224),
}
PHOTOS = {"eskimo_dog.png": 248, "hog.jpg": 341, "horse_cart.jpg": 603, "refrigerator.jpg": 760,
          "samoyed.jpg": 258}
SHARED_MOBILENET = "weights/mobilenet_v2_imagenet1k_from_qnnpack.pth"


@functools.cache
def _built(arch: str) -> nn.Module:
    """Each family is built once per session (VGG16 and ViT-B take ~1 s each on a busy CPU)."""
    return build_backbone(arch, 7, weights=None).eval()


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_head_has_num_classes_outputs_for_every_family(arch):
    family, in_features, n_blocks, side = FAMILIES[arch]
    model = _built(arch)
    layout = layout_of(model)
    head = model.get_submodule(layout.head)
    assert layout.family == family == family_of(arch), f"{arch}: family {layout.family}, expected {family}"
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (in_features, 7), \
        f"{arch}: head {head}, expected Linear({in_features}, 7)"
    assert len(layout.blocks) == n_blocks, f"{arch}: {[b.name for b in layout.blocks]}, expected {n_blocks}"
    with torch.no_grad():
        out = model(torch.randn(1, 3, side, side))
    assert out.shape == (1, 7), f"{arch}: output {tuple(out.shape)}, expected (1, 7)"


def test_vgg16_blocks_split_at_maxpools_then_fc6_fc7():
    layout = layout_of(_built("vgg16"))
    names = [b.name for b in layout.blocks]
    assert names == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"], names
    # conv3 of VGG16 = 3 convs + 3 ReLUs + the pool = features[10..16]
    assert layout.blocks[2].prefixes == tuple(f"features.{i}" for i in range(10, 17)), layout.blocks[2]
    assert layout.head == "classifier.6"


def test_vit_with_pre_logits_and_tiny_convnext_layouts_cover_every_parameter():
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=5, representation_size=8)
    layout = layout_of(vit)
    check_layout(vit, layout)  # raises on any parameter owned by none or two blocks
    assert [b.name for b in layout.blocks] == ["embed", "encoder_layer_0", "encoder_layer_1", "pre_logits"]
    assert "encoder.ln" in layout.blocks[2].prefixes, "the final LayerNorm belongs to the last encoder block"


def test_check_layout_rejects_a_parameter_owned_by_no_block():
    model = torchvision.models.resnet18(num_classes=3)
    layout = layout_of(model)
    broken = type(layout)(layout.family, layout.head, layout.blocks[1:])  # drop the stem
    with pytest.raises(ValueError, match=r"conv1\.weight.*no block"):
        check_layout(model, broken)


def test_unknown_arch_and_unknown_family_errors_name_the_supported_archs():
    with pytest.raises(ValueError, match=r"unknown arch 'vgg17'.*vgg16") as info:
        build_backbone("vgg17", 10)
    assert "resnet50" in str(info.value) and "mobilenet_v2" in str(info.value)
    with pytest.raises(ValueError, match=r"densenet121.*not known.*supported archs"):
        build_backbone("densenet121", 10)
    assert {"vgg16", "resnet50", "efficientnet_v2_s", "convnext_tiny", "vit_b_16", "mobilenet_v2"} \
        <= set(supported_archs())


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_num_classes_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_backbone("resnet18", bad)


def test_weights_and_weights_file_are_exclusive_and_weight_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        build_backbone("resnet18", 3, weights="DEFAULT", weights_file=tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        build_backbone("resnet18", 3, weights="IMAGENET9K")
    with pytest.raises(ValueError, match="SWAG_E2E.*384"):
        build_backbone("vit_b_16", 3, weights="IMAGENET1K_SWAG_E2E_V1")


def test_weights_file_loads_strictly_before_the_head_is_replaced(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.mobilenet_v2()  # 1000-class head, as a downloaded file has
    path = tmp_path / "mbv2.pth"
    torch.save(source.state_dict(), path)
    model = build_backbone("mobilenet_v2", 4, weights_file=path)
    assert torch.equal(model.features[5].conv[0][0].weight, source.features[5].conv[0][0].weight), \
        "backbone weights must come from the file"
    assert model.classifier[1].out_features == 4
    # a training checkpoint wrapping the state dict also loads
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    wrapped = build_backbone("mobilenet_v2", 4, weights_file=tmp_path / "wrapped.pth")
    assert torch.equal(wrapped.features[0][0].weight, source.features[0][0].weight)


def test_weights_file_mismatch_names_arch_and_keys(tmp_path):
    state = torchvision.models.mobilenet_v2().state_dict()
    state.pop("features.0.0.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"mobilenet_v2.*1 missing keys \['features\.0\.0\.weight'\]"
                                         r".*1 unexpected keys \['extra\.weight'\]"):
        build_backbone("mobilenet_v2", 4, weights_file=tmp_path / "bad.pth")
    head10 = torchvision.models.mobilenet_v2(num_classes=10).state_dict()
    torch.save(head10, tmp_path / "head10.pth")
    with pytest.raises(ValueError, match=r"2 shape mismatches .*classifier\.1\.bias: file \(10,\)"
                                         r".*classifier\.1\.weight: file \(10, 1280\)"):
        build_backbone("mobilenet_v2", 4, weights_file=tmp_path / "head10.pth")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_backbone("mobilenet_v2", 4, weights_file=tmp_path / "nowhere.pth")
    (tmp_path / "text.pth").write_text("not torch")
    with pytest.raises(ValueError, match=r"text.pth is not a torch checkpoint file"):
        build_backbone("mobilenet_v2", 4, weights_file=tmp_path / "text.pth")


def _no_download(*args, **kwargs):
    raise AssertionError("torch.hub.download_url_to_file must not be called for a cached file")


def test_default_weights_use_the_torch_hub_cache_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    member = torchvision.models.MobileNet_V2_Weights.DEFAULT
    expected = tmp_path / "th" / "hub" / "checkpoints" / os.path.basename(member.url)
    assert weights_cache_path(member) == expected, "cache path must follow TORCH_HOME and the url basename"
    torch.manual_seed(1)
    stand_in = torchvision.models.mobilenet_v2()
    expected.parent.mkdir(parents=True)
    torch.save(stand_in.state_dict(), expected)
    model = build_backbone("mobilenet_v2", 3, weights="default")
    assert torch.equal(model.features[18][0].weight, stand_in.features[18][0].weight), \
        "DEFAULT must load the cached file"
    assert model.classifier[1].out_features == 3


def test_default_weights_offline_fail_before_training_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("resnet18", 10, weights="DEFAULT")
    expected = tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    message = str(info.value)
    assert str(expected) in message and "--weights-file" in message, message
    assert isinstance(info.value, FileNotFoundError)
    assert calls == [(torchvision.models.ResNet18_Weights.DEFAULT.url, str(expected), "f37072fd")], calls
    assert not expected.exists(), "no partial file may be left where the cache expects the weights"


@pytest.mark.parametrize(("arch", "size", "expected"), [
    ("vgg16", None, (224, 256)), ("resnet50", None, (224, 232)), ("efficientnet_v2_s", None, (384, 384)),
    ("vgg16", 64, (64, 73)), ("mobilenet_v2", 96, (96, 99)),
])
def test_preprocessing_follows_the_weights_transforms(arch, size, expected):
    prep = backbone_preprocessing(arch, image_size=size)
    assert (prep.image_size, prep.resize_size) == expected, f"{arch}@{size}: {prep}"
    assert prep.mean == pytest.approx((0.485, 0.456, 0.406)) and prep.std == pytest.approx((0.229, 0.224, 0.225))


def test_preprocessing_rejects_sizes_the_model_cannot_take():
    with pytest.raises(ValueError, match="vit_b_16 takes exactly 224x224"):
        backbone_preprocessing("vit_b_16", image_size=64)
    with pytest.raises(ValueError, match="image_size 16 is below vgg16's minimum input size 32"):
        backbone_preprocessing("vgg16", image_size=16)


def test_shared_mobilenet_classifies_the_shared_photos(shared_dir: Path):
    from core.data import load_image_tensor

    prep = backbone_preprocessing("mobilenet_v2", weights="IMAGENET1K_V1")  # Resize 256 -> crop 224
    assert (prep.image_size, prep.resize_size) == (224, 256), prep
    model = build_backbone("mobilenet_v2", None, weights_file=shared_dir / SHARED_MOBILENET).eval()
    assert model.classifier[1].out_features == 1000, "num_classes=None keeps the ImageNet head"
    x = torch.stack([load_image_tensor(shared_dir / "photos" / name, prep) for name in PHOTOS])
    with torch.no_grad():
        probs = model(x).softmax(dim=1)
    top1 = probs.argmax(dim=1).tolist()
    assert top1 == list(PHOTOS.values()), f"top-1 {dict(zip(PHOTOS, top1))}, expected {PHOTOS}"
    seen = dict(zip(PHOTOS, probs.max(dim=1).values.tolist()))
    readme = {"eskimo_dog.png": 0.33, "hog.jpg": 0.76, "horse_cart.jpg": 0.80, "refrigerator.jpg": 0.995,
              "samoyed.jpg": 0.81}
    for name, p in readme.items():  # torchvision's full-decode pipeline gives these within 0.01; the JPEG
        # draft decode of core.data.preprocess moves the 1424x2144 samoyed.jpg to ~0.87, hence 0.1
        assert abs(seen[name] - p) < 0.1, f"{name}: top-1 probability {seen[name]:.3f}, README says {p}"
