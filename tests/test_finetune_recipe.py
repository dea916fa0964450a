"""Part B strategies of issue 15: LP-FT, layer-wise LR decay, and head-only epochs on cached backbone features.

Oracles: parameter counts and LRs written out by hand from torch submodules (``model.features[i]``, never
the block prefixes the code uses); for the feature cache, the full forward itself: the same epochs with
the cache switched off must give the same losses, weights, validation logits and RNG state.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from core.data import DataConfig, make_loaders
from core.finetune import LPFT, LayerDecay, head_part_name, make_strategy
from core.finetune.feature_cache import why_not_cacheable
from core.model import backbone_preprocessing, build_backbone, layout_of, replace_head
from core.train import TrainConfig, evaluate, fit, load_checkpoint

SHARED_MOBILENET = Path("weights") / "mobilenet_v2_imagenet1k_from_qnnpack.pth"


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _mobilenet(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("mobilenet_v2", num_classes, weights=None)


def _lr_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def test_lp_ft_probes_the_head_then_fine_tunes_everything():
    model = _mobilenet()
    strategy = LPFT(lp_epochs=2, backbone_lr_mult=0.1)
    strategy.setup(model)
    optimizer = torch.optim.Adam(strategy.param_groups(model, 1e-2), lr=1e-2)
    head = numel(model.classifier[1])
    for epoch in (0, 1):
        strategy.on_epoch_start(epoch, model, optimizer)
        assert all(g["lr"] == 1e-2 for g in optimizer.param_groups), "the probe trains the head at lr"
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == head, f"epoch {epoch} is linear probing: only the head ({head}) trains, got {trainable}"
        assert all(not m.training for block in model.features for m in block.modules()), "frozen: eval mode"
    strategy.on_epoch_start(2, model, optimizer)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == numel(model), "FT: everything trains"
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == numel(model)
    lrs = _lr_of(optimizer)
    assert all(lrs[id(p)] == pytest.approx(1e-3) for p in model.features.parameters()), "backbone at lr x 0.1"
    assert all(lrs[id(p)] == pytest.approx(1e-3) for p in model.classifier.parameters()), \
        "fine-tuning: the probed head joins the small LR"
    with pytest.raises(ValueError, match="lp_epochs"):
        LPFT(lp_epochs=0)


def test_layer_decay_gives_block_i_of_n_lr_times_decay_to_the_n_minus_i():
    model = _mobilenet()
    strategy = LayerDecay(layer_decay=0.8)
    strategy.setup(model)
    optimizer = torch.optim.AdamW(strategy.param_groups(model, 1e-3), lr=1e-3)
    strategy.on_epoch_start(0, model, optimizer)
    lrs = _lr_of(optimizer)
    n = len(model.features)  # 19 blocks: features[0] (stem) .. features[18]
    for i, block in enumerate(model.features):
        for p in block.parameters():
            assert lrs[id(p)] == pytest.approx(1e-3 * 0.8 ** (n - i)), f"features[{i}]: lr x 0.8^{n - i}"
    for p in model.classifier.parameters():
        assert lrs[id(p)] == pytest.approx(1e-3), "the head trains at the base lr"
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == numel(model)
    assert make_strategy("layer-decay").describe()["layer_decay"] == 0.75, "timm-style default"
    with pytest.raises(ValueError, match="layer_decay"):
        make_strategy("full", layer_decay=1.5)


def test_layer_decay_applies_to_blocks_unfrozen_later():
    model = _mobilenet()
    strategy = make_strategy("gradual", unfreeze_every=1, layer_decay=0.5)
    strategy.setup(model)
    optimizer = torch.optim.SGD(strategy.param_groups(model, 0.1), lr=0.1)
    strategy.on_epoch_start(2, model, optimizer)  # the top two blocks join
    lrs = _lr_of(optimizer)
    assert all(lrs[id(p)] == pytest.approx(0.1 * 0.5 ** 1) for p in model.features[18].parameters())
    assert all(lrs[id(p)] == pytest.approx(0.1 * 0.5 ** 2) for p in model.features[17].parameters())


@pytest.mark.parametrize(("arch", "expected"), [
    ("mobilenet_v2", "classifier"),  # Dropout + Linear: the dropout still runs per step
    ("efficientnet_b0", "classifier"),
    ("resnet18", "fc"),
    ("vgg11", "classifier.6"),  # its siblings fc6/fc7 have weights
    ("convnext_tiny", "classifier.2"),  # LayerNorm2d beside it has weights
    ("mobilenet_v3_small", "classifier.3"),
])
def test_head_part_is_the_head_plus_parameter_free_siblings(arch, expected):
    model = build_backbone(arch, 3, weights=None)
    assert head_part_name(model, layout_of(model).head) == expected


def test_cache_is_refused_when_features_would_depend_on_the_step(tiny_imagefolder):
    model = _mobilenet(3)
    strategy = make_strategy("head")
    strategy.setup(model)
    model.train()
    strategy.apply_modes(model)
    loaders = make_loaders(DataConfig(data_dir=tiny_imagefolder, image_size=32, augment=True))
    assert "augmented" in why_not_cacheable(model, "classifier", loaders)
    plain = make_loaders(DataConfig(data_dir=tiny_imagefolder, image_size=32))
    assert why_not_cacheable(model, "classifier", plain) is None
    model.features[3].conv[1].train()  # a BatchNorm left in training mode outside the head
    reason = why_not_cacheable(model, "classifier", plain)
    assert reason is not None and "features.3.conv.1" in reason, reason
    assert make_strategy("top-k", k=1).trained_blocks(0) == 1, "top-k never has a head-only epoch"


@pytest.fixture(scope="module")
def flowers_loaders(shared_dir):
    prep = backbone_preprocessing("mobilenet_v2", "DEFAULT", 64)
    cfg = DataConfig(data_dir=shared_dir / "data" / "flowers5", image_size=64, resize_size=prep.resize_size,
                     normalization="imagenet", max_per_class=10, batch_size=8)
    return make_loaders(cfg, preprocessing=prep), prep


def _fit_head(model, loaders, prep, tmp_path, name, **strategy_kwargs):
    meta = {"model_desc": {"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 5},
            "class_names": loaders.class_names, "preprocessing": prep.to_dict()}
    result = fit(model, loaders, TrainConfig(epochs=2, lr=1e-3, seed=0, device="cpu"), run_dir=tmp_path / name,
                 checkpoint_meta=meta, strategy=make_strategy("head", bn_eval=True, **strategy_kwargs))
    return result, torch.get_rng_state()


def test_head_epochs_on_cached_features_equal_the_full_forward_on_real_photos(shared_dir, flowers_loaders,
                                                                               tmp_path, caplog):
    loaders, prep = flowers_loaders
    base = build_backbone("mobilenet_v2", None, weights_file=shared_dir / SHARED_MOBILENET)
    replace_head(base, layout_of(base), 5)
    full_model, cached_model = copy.deepcopy(base), copy.deepcopy(base)
    full, full_rng = _fit_head(full_model, loaders, prep, tmp_path, "full", feature_cache=False)
    with caplog.at_level(logging.INFO, logger="core.finetune.feature_cache"):
        cached, cached_rng = _fit_head(cached_model, loaders, prep, tmp_path, "cached")
    assert "cached features" in caplog.text, "the cached path must have run"
    for a, b in zip(full.history, cached.history):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), f"epoch {a['epoch']} {key}: {a} vs {b}"
    for (name, a), b in zip(full_model.state_dict().items(), cached_model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=f"{name} after 2 epochs")
    assert torch.equal(full_rng, cached_rng), "the cache must not change the global RNG stream"
    full_val = evaluate(full_model, loaders.val, "cpu")
    cached_val = evaluate(cached_model, loaders.val, "cpu")
    assert cached_val.loss == pytest.approx(full_val.loss, rel=1e-5) and cached_val.correct == full_val.correct
    best = load_checkpoint(tmp_path / "cached" / "best.pt")
    assert set(best["state_dict"]) == set(full_model.state_dict()), "best.pt holds the whole model"


def test_lp_ft_on_real_photos_probes_on_cached_features_then_fine_tunes(shared_dir, flowers_loaders, tmp_path,
                                                                        caplog):
    loaders, prep = flowers_loaders
    model = build_backbone("mobilenet_v2", None, weights_file=shared_dir / SHARED_MOBILENET)
    replace_head(model, layout_of(model), 5)
    meta = {"model_desc": {"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 5},
            "class_names": loaders.class_names, "preprocessing": prep.to_dict()}
    # probe at 1e-2, fine-tune everything at 1e-4: the probe's LR on the whole net would wreck the features
    strategy = make_strategy("lp-ft", lp_epochs=1, bn_eval=True, backbone_lr_mult=0.01)
    with caplog.at_level(logging.INFO, logger="core.finetune.feature_cache"):
        result = fit(model, loaders, TrainConfig(epochs=2, lr=1e-2, seed=0, device="cpu"), run_dir=tmp_path,
                     checkpoint_meta=meta, strategy=strategy)
    assert caplog.text.count("cached features") == 1, "epoch 1 probes on the cache, epoch 2 fine-tunes fully"
    assert all(p.requires_grad for p in model.parameters()), "after the probe everything trains"
    first, second = result.history
    assert second["train_acc"] >= 0.5 and second["train_acc"] > first["train_acc"], \
        f"fine-tuning from the probed head should keep learning (chance is 0.2): {result.history}"


def test_part_b_flags_and_flat_keys_reach_the_strategy():
    from core.finetune import PARTB_FLAT_KEYS, PartBConfig
    from experiments.partB_finetune import build_config, get_args_parser

    args = get_args_parser().parse_args(["--arch", "mobilenet_v2", "--weights", "none", "--strategy", "lp-ft",
                                         "--lp-epochs", "2", "--layer-decay", "0.8", "--no-feature-cache",
                                         "--ema-decay", "0.99", "--tta", "--mixup-alpha", "0.2",
                                         "--augment-policy", "trivialaugment", "--epochs", "3", "--image-size", "64"])
    cfg = build_config(args)
    strategy = cfg.make_strategy()
    assert isinstance(strategy, LPFT) and strategy.lp_epochs == 2 and strategy.layer_decay == 0.8
    assert strategy.feature_cache is False
    assert (cfg.train.ema_decay, cfg.train.tta, cfg.train.mixup_alpha) == (0.99, True, 0.2)
    assert cfg.data.augment_policy == "trivialaugment"
    flat = {"strategy": "layer-decay", "layer_decay": 0.7, "lp_epochs": 1, "feature_cache": False, "tta": True,
            "ema_decay": 0.99, "augment_policy": "randaugment", "random_erasing": 0.1}
    assert set(flat) <= set(PARTB_FLAT_KEYS)
    swept = PartBConfig.from_flat(flat, base=PartBConfig(arch="mobilenet_v2", weights=None))
    assert swept.make_strategy().describe()["layer_decay"] == 0.7 and swept.data.random_erasing == 0.1


class _ShuffledBatches:
    """A batch source that is no DataLoader: its own generator shuffles, ``batch_order()`` says how."""

    def __init__(self, dataset, batch_size: int, generator: torch.Generator) -> None:
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def batch_order(self):
        order = torch.randperm(len(self.dataset), generator=self.generator)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self):
        for idx in self.batch_order():
            items = [self.dataset[int(i)] for i in idx]
            yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def test_cache_follows_any_batch_source_with_batch_order(tiny_imagefolder, tmp_path, caplog):
    import types

    loaders = make_loaders(DataConfig(data_dir=tiny_imagefolder, image_size=32, batch_size=4,
                                      normalization="imagenet"))
    histories, weights = [], []
    for cache in (False, True):
        source = _ShuffledBatches(loaders.train.dataset, 4, torch.Generator().manual_seed(0))
        view = types.SimpleNamespace(train=source, val=loaders.val, test=loaders.test, config=loaders.config,
                                     class_names=loaders.class_names)
        model = _mobilenet(3)
        meta = {"model_desc": {"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 3},
                "class_names": loaders.class_names, "preprocessing": loaders.preprocessing.to_dict()}
        with caplog.at_level(logging.INFO, logger="core.finetune.feature_cache"):
            result = fit(model, view, TrainConfig(epochs=2, lr=1e-3, seed=0, device="cpu"),
                         run_dir=tmp_path / str(cache), checkpoint_meta=meta,
                         strategy=make_strategy("head", feature_cache=cache))
        assert ("cached features" in caplog.text) == cache, caplog.text
        histories.append([(h["train_loss"], h["val_loss"]) for h in result.history])
        weights.append(model.classifier[1].weight.detach().clone())
    # (train_loss, val_loss) per epoch, compared as a tensor: pytest.approx refuses nested lists since pytest 9
    torch.testing.assert_close(torch.tensor(histories[1]), torch.tensor(histories[0]), rtol=1e-5, atol=0)
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-5, atol=1e-6)
