"""A static, offline page that classifies photos in the browser with onnxruntime-web: ``to_onnx.py --web DIR``.

The folder holds ``index.html``, ``model.onnx`` and onnxruntime-web's files, from an npm package installed once
into ``$INAT_CNN_CACHE/npm/`` (never the repository) at the release of the onnxruntime wheel the tests compare it
with; serve it with any static server (wasm cannot load from ``file:``). The page reads classes and
preprocessing from the model's metadata and repeats ``core.data.load_uint8`` and ``normalize`` step by step, in
Pillow's own fixed-point arithmetic; only the JPEG decoder differs (full size, not draft mode), by a few levels.
It keeps every input tensor in ``window.results`` so a test can run onnxruntime on exactly it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from core.data import cache_root
from export.consumers import ConsumerUnavailableError

ORT_WEB_VERSION = "1.31.1"
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE_TEMPLATE = Path(__file__).with_name("web") / "index.html"


def ort_web_package(version: str = ORT_WEB_VERSION) -> Path:
    """onnxruntime-web's npm package folder, installed by npm into the cache on first use."""
    root = cache_root() / "npm" / f"onnxruntime-web-{version}"
    package = root / "node_modules" / "onnxruntime-web"
    if (package / "dist" / ORT_WEB_FILES[-1]).is_file():  # a complete install has all three
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise ConsumerUnavailableError("the web page and --target web need onnxruntime-web from npm, and npm is "
                                       "not installed (Debian: apt-get install -y nodejs npm)")
    done = subprocess.run([npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", "--ignore-scripts",
                           f"onnxruntime-web@{version}"], capture_output=True, text=True)
    if done.returncode or not (package / "package.json").is_file():
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConsumerUnavailableError(f"npm could not install onnxruntime-web@{version} into {root} (is the npm "
                                       f"registry reachable?): {last}")
    return package


def write_web_page(model_path: Path, out_dir: Path, package: Path) -> Path:
    """Fill ``out_dir`` with the page, ``model.onnx`` and onnxruntime-web's files; returns ``index.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ORT_WEB_FILES:
        shutil.copyfile(package / "dist" / name, out_dir / name)
    shutil.copyfile(model_path, out_dir / "model.onnx")
    version = json.loads((package / "package.json").read_text())["version"]
    page = out_dir / "index.html"
    page.write_text(PAGE_TEMPLATE.read_text().replace("{{ORT_VERSION}}", version))
    return page
