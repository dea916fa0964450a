"""Does the exported graph compute what the torch model computes? Torch is the oracle.

At batch sizes other than the export batch, because a graph that secretly kept the batch constant still matches
at that batch (each batch size runs on exactly that many inputs). On real images when available, because random
inputs exercise the arithmetic but not the model's regime (real activations, real top-2 gaps).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from core.data import ImageDecodeError, Preprocessing, load_image_tensor
from export.ort_session import run_logits

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    """Parity passes when ``max|Δlogit| <= atol + rtol * max|logit|`` and top-1 agreement >= ``min_agreement``.

    ``atol=None`` disables the logit bound (INT8: logits move by design; agreement is what matters).
    """

    atol: float | None
    rtol: float
    min_agreement: float

    def __post_init__(self) -> None:
        if self.atol is not None and not (math.isfinite(self.atol) and self.atol >= 0):
            raise ValueError(f"atol must be a finite number >= 0 or None, got {self.atol!r}")
        if not (math.isfinite(self.rtol) and self.rtol >= 0):
            raise ValueError(f"rtol must be a finite number >= 0, got {self.rtol!r}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement!r}")


# Defaults per precision. fp32: the 1e-4 plus 1e-5 relative, so 224 px ImageNet logits (|z| ~ 20)
# keep float-reassociation headroom. fp16: ~3 significant digits. int8: agreement only.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-5, min_agreement=0.99),
    "fp16": Tolerance(atol=5e-2, rtol=1e-2, min_agreement=0.95),
    "int8": Tolerance(atol=None, rtol=0.0, min_agreement=0.90),
}


@dataclass(frozen=True)
class ParityReport:
    """Numbers from one parity run; ``passed`` applies the tolerance."""

    num_inputs: int
    batch_sizes: tuple[int, ...]
    source: str  # "images" | "random"
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float  # fraction of (input, batch size) predictions where both argmaxes agree
    tolerance: Tolerance

    @property
    def limit(self) -> float | None:
        if self.tolerance.atol is None:
            return None
        return self.tolerance.atol + self.tolerance.rtol * self.max_abs_logit

    def failures(self) -> list[str]:
        """Human sentences, one per violated bound (empty when parity holds)."""
        out = []
        if self.limit is not None and not self.max_abs_diff <= self.limit:
            out.append(f"max |logit difference| {self.max_abs_diff:.3g} > tolerance {self.limit:.3g} "
                       f"(atol {self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} x max|logit| "
                       f"{self.max_abs_logit:.3g})")
        if self.top1_agreement < self.tolerance.min_agreement:
            out.append(f"top-1 agreement {self.top1_agreement:.2%} < required "
                       f"{self.tolerance.min_agreement:.2%}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def summary(self) -> str:
        limit = "n/a (agreement only)" if self.limit is None else f"{self.limit:.3g}"
        what = "images" if self.source == "images" else f"{self.source} inputs"
        return (f"parity on {self.num_inputs} {what} at batch sizes "
                f"{list(self.batch_sizes)}: max |logit diff| {self.max_abs_diff:.3g} (limit {limit}), "
                f"top-1 agreement {self.top1_agreement:.2%} -> {'PASS' if self.passed else 'FAIL'}")


def load_images(paths: Sequence[Path], prep: Preprocessing) -> torch.Tensor:
    """Decode the images with the model's preprocessing; undecodable files are skipped."""
    tensors = []
    for path in paths:
        try:
            tensors.append(load_image_tensor(path, prep))
        except ImageDecodeError as exc:
            log.warning("skipping %s", exc)
    if not tensors:
        raise ValueError(f"none of the {len(paths)} image files could be decoded")
    return torch.stack(tensors)


def random_inputs(count: int, prep: Preprocessing, seed: int = 0) -> torch.Tensor:
    """Standard-normal ``[count,3,S,S]`` inputs (what normalised images look like, roughly)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, prep.image_size, prep.image_size, generator=gen)


def check_parity(
    model: nn.Module,
    session: onnxruntime.InferenceSession | Callable[[list[np.ndarray]], list[np.ndarray]],
    inputs: torch.Tensor,
    *,
    batch_sizes: Sequence[int] = (1, 3, 8),
    export_batch: int | None = None,
    tolerance: Tolerance = TOLERANCES["fp32"],
    source: str = "images",
) -> ParityReport:
    """Run ``inputs`` through torch (eval, no grad) and the exported model at each batch size and compare.

    ``session`` is an onnxruntime session, or any runtime as a function of all the batches at once (one call,
    so a runtime in a child process starts once: ``export.consumers``).
    """
    sizes = tuple(int(b) for b in batch_sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"batch_sizes must be positive ints, got {list(batch_sizes)}")
    if export_batch is not None and export_batch in sizes:
        raise ValueError(f"batch size {export_batch} is the export batch; parity must use other sizes "
                         f"(a graph with a baked-in batch would pass there), got {list(sizes)}")
    if inputs.dim() != 4 or len(inputs) == 0:
        raise ValueError(f"inputs must be a non-empty [N,3,H,W] tensor, got shape {tuple(inputs.shape)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    run = session if callable(session) else (lambda batches: [run_logits(session, x) for x in batches])
    batches = []
    for b in sizes:
        order = np.arange(math.ceil(len(inputs) / b) * b) % len(inputs)
        batches += [inputs[torch.from_numpy(order[start:start + b])] for start in range(0, len(order), b)]
    try:
        with torch.inference_mode():
            refs = [model(batch.to(device)).float().cpu().numpy() for batch in batches]
    finally:
        model.train(was_training)
    max_diff, max_logit, agree, total = 0.0, 0.0, 0, 0
    for got, ref in zip(run([batch.numpy() for batch in batches]), refs, strict=True):
        if got.shape != ref.shape:
            raise ValueError(f"the exported model returned shape {got.shape} at batch {len(ref)}; torch returned "
                             f"{ref.shape}")
        max_diff = max(max_diff, float(np.abs(got - ref).max()))
        max_logit = max(max_logit, float(np.abs(ref).max()))
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        total += len(ref)
    return ParityReport(num_inputs=len(inputs), batch_sizes=sizes, source=source, max_abs_diff=max_diff,
                        max_abs_logit=max_logit, top1_agreement=agree / total, tolerance=tolerance)
