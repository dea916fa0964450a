"""Exact parameter, MAC and FLOP counts of a Part A CNN, from its spec alone — and torch's view of them.

Conventions (per image, i.e. batch 1; multiply by N for a batch of N — every term is per sample):

* **params**: trainable parameters: conv ``Cout·Cin·k² + Cout`` (bias), batch norm ``2·C`` (γ, β;
  running statistics are buffers, not parameters), linear ``in·out + out``.
* **MACs**: multiply-accumulates of conv and linear layers only: conv ``Cout·Hc·Wc·Cin·k²`` where
  ``Hc×Wc`` is the conv's output map, linear ``in·out``. Bias, batch norm, activations, pooling and
  dropout do no multiply-accumulates.
* **FLOPs**: ``2 × MACs`` for conv and linear, and 0 for everything else — exactly the convention of
  :class:`torch.utils.flop_counter.FlopCounterMode` (``aten.convolution`` and ``aten.addmm`` count
  ``2·M·N·K`` and ignore the bias add), which the tests use as the oracle.
* **total ops** ("total computations", a fuller inference-time count): FLOPs plus one add per conv or
  linear output for the bias, 2 ops per element for batch norm in eval mode (its scale and shift folded
  into one multiply and one add), 1 op per element for every activation (whatever its internal cost),
  ``p² − 1`` comparisons per max-pool output of a ``p×p`` window, and 0 for flatten and dropout
  (identities at inference).

The closed formula for the assignment's uniform case lives in :data:`CLOSED_FORMULA` and
:func:`closed_form`; it equals the per-layer sum (tested for every odd and even ``k``).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from core.model.spec import CNNSpec, LayerShape

CLOSED_FORMULA = """\
Uniform Part A CNN: m filters of k×k in each of the 5 blocks, n dense units, input C×H×W, N classes,
padding k//2, 2×2 max-pool with stride 2.
  e = 1 if k is even else 0            (an even kernel grows the map by one pixel)
  H_0 = H,  H_i = floor((H_(i-1) + e) / 2)      (likewise W_i),  i = 1..5
  params = m(C·k² + 1) + 4·m(m·k² + 1) + n(m·H_5·W_5 + 1) + N(n + 1)      [+ 10·m with batch norm]
  MACs   = k²·m·[ C·(H_0+e)(W_0+e) + m·Σ_{i=1..4} (H_i+e)(W_i+e) ] + n·(m·H_5·W_5 + N)
  FLOPs  = 2 · MACs      (torch FlopCounterMode convention: bias, BN, activations, pooling = 0)
For odd k and H = W divisible by 32 (e = 0, H_i = H / 2^i):
  MACs   = k²·m·H²·(C + m·(1/4 + 1/16 + 1/64 + 1/256)) + n·(m·H²/1024 + N)"""


@dataclass(frozen=True)
class LayerCount:
    """Counts of one layer, per image."""

    name: str
    kind: str
    out_shape: tuple[int, ...]
    params: int
    macs: int
    flops: int
    total_ops: int


@dataclass(frozen=True)
class Counts:
    """Totals per image (batch 1)."""

    params: int
    macs: int
    flops: int
    total_ops: int


@dataclass(frozen=True)
class ClosedFormCounts:
    """What the closed formula gives (it has no term for the fuller ``total_ops`` count)."""

    params: int
    macs: int
    flops: int


def _block_of(spec: CNNSpec, layer: LayerShape):
    return spec.blocks[int(layer.name[len("block")]) - 1]


def count_layers(spec: CNNSpec) -> list[LayerCount]:
    """Per-layer counts in forward order (see the module docstring for the conventions)."""
    rows: list[LayerCount] = []
    for layer in spec.layer_shapes():
        out_elems = prod(layer.out_shape)
        params = macs = ops = 0
        if layer.kind == "conv":
            cin = layer.in_shape[0]
            k = _block_of(spec, layer).kernel_size
            cout = layer.out_shape[0]
            params = cout * cin * k * k + cout
            macs = out_elems * cin * k * k
            ops = 2 * macs + out_elems
        elif layer.kind == "linear":
            fan_in, fan_out = layer.in_shape[0], layer.out_shape[0]
            params = fan_in * fan_out + fan_out
            macs = fan_in * fan_out
            ops = 2 * macs + fan_out
        elif layer.kind == "bn":
            params = 2 * layer.out_shape[0]
            ops = 2 * out_elems
        elif layer.kind == "act":
            ops = out_elems
        elif layer.kind == "pool":
            p = _block_of(spec, layer).pool_size
            ops = out_elems * (p * p - 1)
        rows.append(LayerCount(layer.name, layer.kind, layer.out_shape, params, macs, 2 * macs, ops))
    return rows


def count_totals(spec: CNNSpec) -> Counts:
    rows = count_layers(spec)
    return Counts(
        params=sum(r.params for r in rows),
        macs=sum(r.macs for r in rows),
        flops=sum(r.flops for r in rows),
        total_ops=sum(r.total_ops for r in rows),
    )


def count_params(spec: CNNSpec) -> int:
    """Trainable parameters; equals ``sum(p.numel() for p in build_cnn(spec).parameters())``."""
    return count_totals(spec).params


def count_flops(spec: CNNSpec, batch_size: int = 1) -> int:
    """FLOPs of one forward pass of ``batch_size`` images, in FlopCounterMode's convention."""
    return batch_size * count_totals(spec).flops


def uniform_knobs(spec: CNNSpec) -> tuple[int, int, int] | None:
    """``(m, k, n)`` when the spec is the closed formula's case (same m and k everywhere, 2×2/2 pools)."""
    first = spec.blocks[0]
    same = all(
        b.out_channels == first.out_channels and b.kernel_size == first.kernel_size
        and b.pool_size == 2 and b.pool_stride == 2 and b.batch_norm == first.batch_norm
        for b in spec.blocks
    )
    return (first.out_channels, first.kernel_size, spec.head.dense_units) if same else None


def closed_form(
    m: int,
    k: int,
    n: int,
    image_size: int | tuple[int, int] = 224,
    in_channels: int = 3,
    num_classes: int = 10,
    batch_norm: bool = False,
) -> ClosedFormCounts:
    """:data:`CLOSED_FORMULA` evaluated; must equal :func:`count_totals` of the matching spec."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    e = 1 if k % 2 == 0 else 0
    hs, ws = [h], [w]
    for _ in range(5):
        hs.append((hs[-1] + e) // 2)
        ws.append((ws[-1] + e) // 2)
    if hs[5] < 1 or ws[5] < 1:
        raise ValueError(f"image_size {h}x{w} is too small for 5 pooling stages (the map shrinks below 1x1)")
    c, big_n = in_channels, num_classes
    params = m * (c * k * k + 1) + 4 * m * (m * k * k + 1) + n * (m * hs[5] * ws[5] + 1) + big_n * (n + 1)
    if batch_norm:
        params += 10 * m
    conv_maps = c * (hs[0] + e) * (ws[0] + e) + m * sum((hs[i] + e) * (ws[i] + e) for i in range(1, 5))
    macs = k * k * m * conv_maps + n * (m * hs[5] * ws[5] + big_n)
    return ClosedFormCounts(params=params, macs=macs, flops=2 * macs)


def measured_flops(model, input_shape: tuple[int, ...]) -> int:
    """FLOPs torch's :class:`FlopCounterMode` counts for one eval-mode forward pass on zeros."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(input_shape, dtype=param.dtype, device=param.device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def format_count(value: int) -> str:
    """``442122 -> '442.1K'``, for display only (counts stay exact ints everywhere else)."""
    for unit, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return str(value)
