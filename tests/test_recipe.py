"""Recipe features of issue 15 against independent oracles: MixUp/CutMix, EMA of the weights, flip TTA,
the soft-target loss, and the stronger per-sample augmentation.

Oracles: MixUp/CutMix outputs must equal the hand formula with the ``lam`` they drew (recovered from the
soft targets) and ``lam`` must follow Beta(a, a); the EMA must equal an exponential average computed by
hand from the weights after every step; TTA logits must equal the mean of ``model(x)`` and
``model(torch.flip(x))``; the loss with soft targets must equal ``-(t * log_softmax).sum(1).mean()``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.data import Preprocessing
from core.data.augment_policies import AUGMENT_POLICIES, erasing_ops, policy_ops
from core.data.loaders import DataConfig, per_sample_augmentation
from core.train import FlipTTA, TrainConfig, WeightEMA, evaluate, make_batch_mixer, train_one_epoch, with_tta


def _one_hot(y: torch.Tensor, c: int) -> torch.Tensor:
    return torch.eye(c)[y]


def _batch(n: int = 8, c: int = 5, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % c  # neighbours always differ: lam is visible in every row
    return x, y


# ------------------------------------------------------------------ MixUp / CutMix
def test_mixup_equals_hand_formula_with_the_drawn_lambda():
    x, y = _batch()
    mixer = make_batch_mixer(0.4, 0.0, 5)
    torch.manual_seed(1)
    mixed, soft = mixer(x, y)
    lam = float(soft[0, y[0]])  # y[0] != y[-1]: the soft target of the own class is lam
    assert 0 < lam < 1, f"lam should be in (0, 1), got {lam}"
    expected_x = lam * x + (1 - lam) * torch.roll(x, shifts=1, dims=0)
    expected_t = lam * _one_hot(y, 5) + (1 - lam) * _one_hot(torch.roll(y, 1, 0), 5)
    torch.testing.assert_close(mixed, expected_x, msg="MixUp images != lam*x + (1-lam)*x[i-1]")
    torch.testing.assert_close(soft, expected_t, msg="MixUp targets != lam*onehot(y) + (1-lam)*onehot(y[i-1])")


def test_mixup_lambda_follows_beta_alpha_alpha():
    x, y = _batch(n=4)
    alpha = 0.4
    mixer = make_batch_mixer(alpha, 0.0, 5)
    torch.manual_seed(0)
    lams = torch.tensor([float(mixer(x, y)[1][0, y[0]]) for _ in range(3000)])
    mean, var = float(lams.mean()), float(lams.var())
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); standard errors ~0.007 and ~0.003 at n=3000
    assert abs(mean - 0.5) < 0.03, f"mean of lam {mean:.3f}, Beta({alpha},{alpha}) has 0.5"
    assert abs(var - 1 / (4 * (2 * alpha + 1))) < 0.012, f"var of lam {var:.4f} != {1 / (4 * (2 * alpha + 1)):.4f}"


def test_cutmix_pastes_one_box_and_weights_targets_by_its_area():
    x, y = _batch(size=16)
    mixer = make_batch_mixer(0.0, 1.0, 5)
    rolled = torch.roll(x, 1, 0)
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, soft = mixer(x, y)
        from_other = (mixed == rolled).all(dim=1)  # [N, H, W]: pixels taken from image i-1
        kept = ~from_other.unsqueeze(1).expand_as(mixed)
        assert torch.equal(mixed[kept], x[kept]), "CutMix changed pixels outside the pasted box"
        box = from_other[0]
        assert (from_other == box).all(), "CutMix must paste the same box in every image of the batch"
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if rows.numel():
            r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
            assert box[r0:r1, c0:c1].all() and int(box.sum()) == (r1 - r0) * (c1 - c0), "pasted region is no box"
        lam = 1 - float(box.sum()) / box.numel()
        expected_t = lam * _one_hot(y, 5) + (1 - lam) * _one_hot(torch.roll(y, 1, 0), 5)
        torch.testing.assert_close(soft, expected_t, msg=f"CutMix targets must be weighted by the kept area {lam}")


def test_both_alphas_pick_mixup_or_cutmix_per_batch():
    x, y = _batch(size=16)
    mixer = make_batch_mixer(1.0, 1.0, 5)
    kinds = set()
    torch.manual_seed(3)
    for _ in range(40):
        mixed, soft = mixer(x, y)
        lam = float(soft[0, y[0]])
        blended = torch.allclose(mixed, lam * x + (1 - lam) * torch.roll(x, 1, 0), atol=1e-6)
        pasted = bool(((mixed == x) | (mixed == torch.roll(x, 1, 0))).all())
        assert blended or pasted, "each batch must be a MixUp or a CutMix of the batch"
        kinds.add("mixup" if blended and not pasted else "cutmix")
    assert kinds == {"mixup", "cutmix"}, f"40 batches should see both kinds, saw {kinds}"


def test_no_alpha_means_no_mixer_and_bad_values_are_rejected():
    assert make_batch_mixer(0.0, 0.0, 5) is None
    with pytest.raises(ValueError, match="mixup_alpha"):
        make_batch_mixer(-0.1, 0.0, 5)
    with pytest.raises(ValueError, match="mixup_alpha"):
        TrainConfig(mixup_alpha=-1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_soft_target_loss_with_label_smoothing_matches_hand_formula():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    x, y = _batch(n=6)
    torch.manual_seed(0)
    _, soft = make_batch_mixer(0.4, 0.0, 5)(x, y)
    eps = 0.1
    target = soft * (1 - eps) + eps / 5
    hand = float(-(target * torch.log_softmax(logits, 1)).sum(1).mean())
    got = float(nn.CrossEntropyLoss(label_smoothing=eps)(logits, soft))
    assert got == pytest.approx(hand, rel=1e-6), f"soft-target CE {got} != hand {hand}"


def test_train_one_epoch_trains_on_mixed_batches_and_scores_hard_labels():
    torch.manual_seed(0)
    x, y = _batch(n=8, size=4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
    ref = copy.deepcopy(model)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, generator=torch.Generator())  # not the global RNG
    mixer = make_batch_mixer(0.4, 0.0, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.manual_seed(7)
    stats = train_one_epoch(model, nn.CrossEntropyLoss(), opt, loader, torch.device("cpu"), mixer=mixer)
    # the oracle: the same draw by hand, then one SGD step on the soft-target loss
    torch.manual_seed(7)
    mixed, soft = mixer(x, y)
    logits = ref(mixed)
    loss = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.5 * p.grad
    assert stats.loss == pytest.approx(loss.item(), rel=1e-5), "reported loss must be the soft-target loss"
    assert stats.acc == pytest.approx(float((logits.argmax(1) == y).float().mean())), "accuracy is on hard labels"
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, msg="the step must follow the soft-target gradient")


# ------------------------------------------------------------------ EMA
def test_ema_equals_hand_computed_exponential_average_after_k_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    decay, k = 0.9, 12
    ema = WeightEMA(model, decay)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snapshots = []
    for _ in range(k):
        x = torch.randn(4, 3, 8, 8)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        snapshots.append({n: t.detach().clone().double() for n, t in model.state_dict().items()})
    hand = dict(snapshots[0])
    for t in range(1, k):
        d = min(decay, (1 + t) / (10 + t))  # TensorFlow's num_updates warmup
        for name, w in snapshots[t].items():
            copied = not w.is_floating_point() or "num_batches" in name
            hand[name] = w.clone() if copied else d * hand[name] + (1 - d) * w
    for name, value in ema.module.state_dict().items():
        if "num_batches" in name:
            assert int(value) == k, "integer buffers are copied"
            continue
        torch.testing.assert_close(value.double(), hand[name], rtol=1e-5, atol=1e-6,
                                   msg=f"EMA of {name} differs from the hand average")
    assert any(not torch.allclose(ema.module.state_dict()[n].double(), snapshots[-1][n]) for n in hand
               if "num_batches" not in n), "EMA must differ from the last weights"


def test_ema_state_round_trips():
    model = nn.Linear(3, 2)
    ema = WeightEMA(model, 0.99)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
    other = WeightEMA(nn.Linear(3, 2), 0.99)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 3
    torch.testing.assert_close(other.module.weight, ema.module.weight)
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(nn.Linear(3, 2), 0.5).load_state_dict(ema.state_dict())


# ------------------------------------------------------------------ TTA
def test_tta_logits_are_the_mean_over_the_image_and_its_flip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.randn(5, 3, 10, 10)
    with torch.no_grad():
        expected = (model(x) + model(torch.flip(x, dims=[3]))) / 2
        torch.testing.assert_close(FlipTTA(model)(x), expected)
        assert not torch.allclose(expected, model(x)), "an asymmetric model must see a difference"
    assert with_tta(model, False) is model


def test_evaluate_with_tta_scores_the_averaged_logits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x, y = torch.randn(30, 3, 10, 10), torch.randint(0, 3, (30,))
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    stats = evaluate(with_tta(model, True), loader, "cpu")
    with torch.no_grad():
        logits = (model(x) + model(torch.flip(x, dims=[3]))) / 2
    assert stats.correct == int((logits.argmax(1) == y).sum()), "TTA accuracy must come from the averaged logits"
    assert stats.loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)


# ------------------------------------------------------------------ per-sample augmentation
def test_policy_names_and_erasing_probability_are_validated():
    assert set(AUGMENT_POLICIES) == {"none", "trivialaugment", "randaugment"}
    with pytest.raises(ValueError, match="augment_policy"):
        DataConfig(augment_policy="autoaugment")
    with pytest.raises(ValueError, match="random_erasing"):
        DataConfig(random_erasing=1.5)
    assert not DataConfig().augments and DataConfig(random_erasing=0.1).augments
    assert per_sample_augmentation(Preprocessing(16), basic=False) is None, "nothing on: no transform at all"


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_policies_run_on_uint8_and_end_normalised(policy):
    from torchvision.transforms import v2

    prep = Preprocessing(16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    tf = per_sample_augmentation(prep, basic=False, policy=policy)
    torch.manual_seed(0)
    out = tf(img)
    # oracle: torchvision's own policy with the same draw, then the normalisation by hand
    torch.manual_seed(0)
    (op,) = policy_ops(policy)
    expected = (op(img).float() / 255 - 0.5) / 0.25
    assert out.dtype == torch.float32 and out.shape == (3, 16, 16)
    torch.testing.assert_close(out, expected, msg=f"{policy}: policy on uint8, then normalise")
    assert isinstance(op, v2.TrivialAugmentWide if policy == "trivialaugment" else v2.RandAugment)


def test_random_erasing_blanks_one_rectangle_to_the_mean():
    prep = Preprocessing(32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)  # normalised value (200/255-0.5)/0.25 != 0
    tf = per_sample_augmentation(prep, basic=False, random_erasing=1.0)
    assert len(erasing_ops(1.0)) == 1 and erasing_ops(0.0) == []
    for seed in range(10):
        torch.manual_seed(seed)
        out = tf(img)
        erased = (out == 0).all(0)
        rows, cols = erased.any(1).nonzero().flatten(), erased.any(0).nonzero().flatten()
        area = int(erased.sum())
        assert area == (int(rows.max()) - int(rows.min()) + 1) * (int(cols.max()) - int(cols.min()) + 1), "a box"
        assert 0.02 * 1024 - 1 <= area <= 0.33 * 1024 + 1, f"erased area {area} outside 2-33% of the image"


# ------------------------------------------------------------------ every feature on real photos, with resume
def test_recipe_features_on_real_photos_resume_exactly_and_keep_the_ema(shared_dir, tmp_path):
    """Policy + erasing + MixUp/CutMix + EMA + TTA + label smoothing, 32 px flowers: 2 epochs straight equal
    1 epoch, an interrupt, and a resume (every RNG draw of the augmentations and mixes is restored)."""
    from core.train import load_checkpoint
    from experiments.partA_train import main

    flags = ["--data-dir", str(shared_dir / "data" / "flowers5"), "--image-size", "32", "--max-per-class", "12",
             "--filters", "8", "--dense", "16", "--batch-size", "16", "--augment", "--augment-policy",
             "trivialaugment", "--random-erasing", "0.25", "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0",
             "--ema-decay", "0.9", "--tta", "--label-smoothing", "0.1", "--out-dir", str(tmp_path),
             "--wandb-mode", "disabled", "--scheduler", "constant"]  # a 1-epoch cosine would not match 2 epochs
    assert main([*flags, "--epochs", "2", "--name", "straight"]) == 0
    assert main([*flags, "--epochs", "1", "--name", "resumed"]) == 0
    assert main([*flags, "--epochs", "2", "--name", "resumed", "--resume"]) == 0
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("straight", "resumed"))
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"resumed weights differ at {key}"
    for key, value in a["extra"]["ema"]["state_dict"].items():
        assert torch.equal(value, b["extra"]["ema"]["state_dict"][key]), f"resumed EMA differs at {key}"
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    def curve(payload: dict) -> list[list[float]]:
        return [[h[k] for k in keys] for h in payload["extra"]["history"]]

    assert curve(a) == curve(b), "resumed metrics differ"
    saved = a["train_config"]
    assert (saved["mixup_alpha"], saved["cutmix_alpha"], saved["ema_decay"], saved["tta"],
            saved["label_smoothing"]) == (0.2, 1.0, 0.9, True, 0.1), saved
    # best.pt holds the EMA (what validation scored), not the raw weights
    best = load_checkpoint(tmp_path / "straight" / "best.pt")
    if best["epoch"] == 2:
        for key, value in best["state_dict"].items():
            assert torch.equal(value, a["extra"]["ema"]["state_dict"][key]), f"best.pt is not the EMA at {key}"
    assert any(not torch.equal(v, a["state_dict"][k]) for k, v in a["extra"]["ema"]["state_dict"].items()
               if v.is_floating_point()), "the EMA must differ from the raw weights"
    metrics = json.loads((tmp_path / "straight" / "test_metrics.json").read_text())
    assert metrics["tta"] is True and metrics["test_images"] == 60
    config = (tmp_path / "straight" / "config.yaml").read_text()
    assert "augment_policy: trivialaugment" in config and "random_erasing: 0.25" in config, config


# ------------------------------------------------------------------ flags and sweep keys
def test_recipe_flat_keys_coerce_sweep_values_and_round_trip():
    from core.partA import FLAT_KEYS, PartAConfig

    flat = {"augment_policy": "RandAugment", "random_erasing": "0.25", "mixup_alpha": "0.2", "cutmix_alpha": 1,
            "ema_decay": "0.999", "tta": "true", "label_smoothing": 0.1}
    assert set(flat) <= set(FLAT_KEYS)
    cfg = PartAConfig.from_flat(flat)
    assert (cfg.data.augment_policy, cfg.data.random_erasing) == ("randaugment", 0.25)
    assert (cfg.train.mixup_alpha, cfg.train.cutmix_alpha, cfg.train.ema_decay, cfg.train.tta) == (0.2, 1.0, 0.999,
                                                                                                    True)
    assert PartAConfig.from_flat(cfg.to_flat()) == cfg
    assert PartAConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("flags", "message"), [
    (["--augment-policy", "autoaugment"], "invalid choice"),
    (["--mixup-alpha", "-1"], "argument --mixup-alpha: -1 is out of range: expected a value in [0,inf)"),
    (["--ema-decay", "1.5"], "argument --ema-decay: 1.5 is out of range: expected a value in [0,1)"),
    (["--random-erasing", "2"], "argument --random-erasing: 2 is out of range: expected a value in [0,1]"),
])
def test_bad_recipe_flags_exit_2_with_one_line(flags, message, capsys, tmp_path):
    from experiments.partA_train import main

    try:  # argparse exits for a bad choice or a value outside the flag's domain
        code = main([*flags, "--out-dir", str(tmp_path), "--wandb-mode", "disabled"])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
