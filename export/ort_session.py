"""onnxruntime sessions that say which execution provider actually runs, and the metadata they carry.

``onnxruntime-gpu`` lists CUDA as available even without a GPU or CUDA libraries, prints red C++ logs and
silently runs on the CPU. So the provider that runs is read back from the session, never assumed; onnxruntime's
stderr is captured at the file-descriptor level and condensed into one reason in :class:`ProviderReport`;
``provider="cuda"`` is a demand (:class:`ProviderUnavailableError` rather than serving on the CPU behind the
user's back), ``auto`` accepts a fallback; TensorRT is never tried implicitly (an engine per shape, minutes).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export.metadata import ModelMetadata, check_model_file

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "cuda", "cpu")
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
_REQUESTS = {"auto": (CUDA_EP, CPU_EP), "cuda": (CUDA_EP, CPU_EP), "cpu": (CPU_EP,)}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ProviderUnavailableError(RuntimeError):
    """``provider="cuda"`` was demanded but onnxruntime could not run CUDA here."""


@dataclass(frozen=True)
class ProviderReport:
    """What was asked for, what onnxruntime offered, and what actually runs the model."""

    requested: str  # auto | cuda | cpu
    available: tuple[str, ...]  # onnxruntime.get_available_providers(): what the build *contains*
    active: tuple[str, ...]  # session.get_providers(): what the session really uses, in priority order
    fallback_reason: str = ""  # why CUDA is not active, when it was tried

    @property
    def provider(self) -> str:
        """The provider that runs the graph (the first active one)."""
        return self.active[0]

    @property
    def fell_back(self) -> bool:
        return self.requested in ("auto", "cuda") and self.provider != CUDA_EP

    def line(self) -> str:
        """One human line for logs and CLIs."""
        if not self.fell_back:
            return f"provider: {self.provider} (requested {self.requested})"
        reason = self.fallback_reason or f"{CUDA_EP} is not in this onnxruntime build"
        return f"provider: {self.provider} (requested {self.requested}; CUDA not usable: {reason})"


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where onnxruntime's C++ logger writes) into a buffer for the block.

    Always descriptor 2, not ``sys.stderr.fileno()``: Python's ``sys.stderr`` may be a different
    descriptor (pytest's capture, a redirected stream) while C++ ``std::cerr`` stays on 2. Not
    thread-safe with respect to other threads writing to stderr meanwhile; session creation is short.
    """
    lines: list[str] = []
    for stream in (sys.stderr, sys.__stderr__):
        if stream is not None:
            stream.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = _ANSI.sub("", sink.read().decode("utf-8", errors="replace"))
            lines.extend(line for line in text.splitlines() if line.strip())


def _cuda_reason(lines: list[str]) -> str:
    """The most specific 'why CUDA failed' sentence in onnxruntime's captured log lines."""
    for line in lines:
        if "with error:" in line:
            return line.split("with error:", 1)[1].strip()
    for line in lines:
        if "Failed to create" in line:
            return line.split("]", 1)[-1].strip().split(". Please")[0]
    return "no GPU / CUDA libraries found by onnxruntime"


TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def _refuse_torch_file(path: Path) -> None:
    """A torch checkpoint passed where an ONNX model belongs: say to export it, not INVALID_PROTOBUF."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if path.suffix.lower() in TORCH_SUFFIXES or head == b"PK\x03\x04" or head[:1] == b"\x80":
        raise ValueError(f"{path} is a PyTorch checkpoint, not an ONNX model: export it first with "
                         f"python export/to_onnx.py --checkpoint {path} --out model.onnx, then pass model.onnx")


def create_session(
    model: str | Path | bytes,
    provider: str = "auto",
    *,
    intra_op_threads: int | None = None,
    allow_spinning: bool = True,
) -> tuple[onnxruntime.InferenceSession, ProviderReport]:
    """An ``InferenceSession`` on the requested provider and a report of what actually runs.

    ``model`` is a path or serialized bytes. ``intra_op_threads=None`` lets onnxruntime use every core.
    ``allow_spinning=False`` stops idle onnxruntime threads from busy-waiting after each run: slightly
    slower per call, but fair to other work in the same process (torch timed right after, in benchmarks).
    """
    import onnxruntime as ort

    if provider not in PROVIDER_CHOICES:
        raise ValueError(f"unknown provider {provider!r}; expected one of {list(PROVIDER_CHOICES)}")
    if isinstance(model, (str, Path)):
        _refuse_torch_file(check_model_file(Path(model)))
        source: str | bytes = str(model)
    else:
        source = model
    available = tuple(ort.get_available_providers())
    wanted = [p for p in _REQUESTS[provider] if p in available] or [CPU_EP]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only for this session's own messages
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with _captured_stderr() as captured:
        try:
            session = ort.InferenceSession(source, sess_options=options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            what = model if isinstance(model, (str, Path)) else "the serialized model"
            reason = " ".join(str(exc).split())
            raise ValueError(f"{what} is not an ONNX model onnxruntime can load ({reason}); pass an .onnx file "
                             "written by export/to_onnx.py") from exc
    for line in captured:
        log.debug("onnxruntime: %s", line)
    active = tuple(session.get_providers())
    reason = ""
    if CUDA_EP in wanted and active[0] != CUDA_EP:
        reason = _cuda_reason(captured)
    elif provider != "cpu" and CUDA_EP not in available:
        reason = f"this onnxruntime build has no {CUDA_EP} (install onnxruntime-gpu)"
    report = ProviderReport(requested=provider, available=available, active=active, fallback_reason=reason)
    if provider == "cuda" and report.provider != CUDA_EP:
        raise ProviderUnavailableError(
            f"--provider cuda was requested but onnxruntime runs {report.provider} here ({report.fallback_reason}); "
            f"use --provider auto to fall back to the CPU, or --provider cpu"
        )
    log.debug("%s", report.line())  # callers print or log report.line() once, where the user looks
    return session, report


def session_metadata(session: onnxruntime.InferenceSession, *, where: str = "the ONNX file") -> ModelMetadata:
    """Our metadata from a live session (``MissingMetadataError`` for foreign models)."""
    return ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, where=where)


def run_logits(session: onnxruntime.InferenceSession, images: np.ndarray) -> np.ndarray:
    """``[N,3,S,S]`` float32 images → ``[N,C]`` float32 logits (first input and first output)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    inp = session.get_inputs()[0]
    if images.ndim != 4:
        raise ValueError(f"images must be [N,3,H,W], got shape {images.shape}")
    expected = inp.shape[1:]
    if all(isinstance(d, int) for d in expected) and list(images.shape[1:]) != list(expected):
        raise ValueError(f"model input {inp.name!r} expects [N, {', '.join(map(str, expected))}], got "
                         f"{list(images.shape)}; check --image-size")
    (logits,) = session.run([session.get_outputs()[0].name], {inp.name: images})
    return np.asarray(logits, dtype=np.float32)
