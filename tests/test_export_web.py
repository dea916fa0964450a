"""The ``to_onnx.py --web DIR`` page in a real browser: headless Chromium (Debian's) driven by Playwright.

MobileNetV2 with the shared ImageNet weights is exported with ``--web``; the folder is served from a loopback
address (wasm does not load from ``file:``), the shared photos are picked in the page's file input, and:

* the page's probabilities equal onnxruntime's in Python, run on the exact tensor the page built, to 1e-4;
* that tensor is ``core.data.normalize`` of the page's uint8 pixels, bit for bit;
* the pixels are ``core.data.load_uint8``'s: identical for the PNG; for JPEGs the browser decodes at full size
  where Pillow's draft mode decodes reduced, so they differ by a few levels, and the top-1 class is the one
  ``export/infer.py``'s pipeline gives;
* every request stays on the loopback server (the page works offline).
"""

from __future__ import annotations

import functools
import http.server
import importlib
import tempfile
import threading

import numpy as np
import pytest
import torch
from test_reports_browser import CHROMIUM, FLAGS

from core.data import Preprocessing, load_image_tensor, load_uint8, normalize
from export.consumers import ConsumerUnavailableError
from export.ort_session import create_session, run_logits

to_onnx = importlib.import_module("export.to_onnx")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}")]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def page_dir(shared_dir, tmp_path_factory):
    import torchvision

    from core.model import build_backbone
    from core.train import make_payload, save_checkpoint

    root = tmp_path_factory.mktemp("web")
    model = build_backbone("mobilenet_v2", None,
                           weights_file=shared_dir / "weights" / "mobilenet_v2_imagenet1k_from_qnnpack.pth")
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    save_checkpoint(root / "mnv2.pt", make_payload(model, model_desc={"kind": "backbone", "arch": "mobilenet_v2",
                                                                      "num_classes": 1000},
                                                   class_names=categories, preprocessing=Preprocessing(224, 256),
                                                   train_config={}, metrics={}, epoch=0))
    try:
        from export.webpage import ort_web_package
        ort_web_package()
    except ConsumerUnavailableError as exc:
        pytest.skip(str(exc))
    code = to_onnx.main(["--checkpoint", str(root / "mnv2.pt"), "--parity-images", str(shared_dir / "photos"),
                         "--parity-batch-sizes", "1", "3", "--web", str(root / "page"), "--threads", "1"])
    assert code == 0, f"to_onnx --web exited {code}"
    return root / "page"


def test_page_classifies_the_shared_photos_like_onnxruntime(page_dir, shared_dir):
    from playwright.sync_api import sync_playwright

    photos = sorted(p for p in (shared_dir / "photos").iterdir() if p.suffix in (".jpg", ".png"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(page_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    requests: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), args=FLAGS,
                                                           headless=True)
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(base + "index.html")
            page.wait_for_function("window.ready || window.pageError", timeout=60_000)
            assert page.evaluate("window.pageError || ''") == "", page.text_content("#status")
            page.set_input_files("#files", [str(p) for p in photos])
            page.wait_for_function(f"window.results.length === {len(photos)} || window.pageError", timeout=180_000)
            assert page.evaluate("window.pageError || ''") == "", page.text_content("#status")
            results = page.evaluate("window.results")
            shown = page.text_content("#out")
            browser.close()
    finally:
        server.shutdown()
    assert all(url.startswith((base, f"blob:{base}")) for url in requests), f"requests left the server: {requests}"

    session, _ = create_session(page_dir / "model.onnx", "cpu", intra_op_threads=1)
    prep = Preprocessing(224, 256)
    for result, photo in zip(sorted(results, key=lambda r: r["name"]), photos, strict=True):
        u8 = torch.tensor(result["input_uint8"], dtype=torch.uint8).view(3, 224, 224)
        x = np.asarray(result["input"], dtype=np.float32).reshape(1, 3, 224, 224)
        assert np.array_equal(x[0], normalize(u8, prep).numpy()), f"{photo.name}: page normalisation differs"
        page_probs = np.asarray(result["probs"])
        ort_probs = _softmax(run_logits(session, x))[0]
        diff = float(np.abs(page_probs - ort_probs).max())
        assert diff <= 1e-4, f"{photo.name}: page vs onnxruntime on the page's tensor: max |dp| {diff:.3g}"
        python_u8 = load_uint8(photo, prep)
        level = (u8.int() - python_u8.int()).abs().float()
        if photo.suffix == ".png":
            assert level.max() == 0, f"{photo.name}: PNG pixels differ from load_uint8 by up to {level.max()}"
        assert level.mean() <= 3.0, f"{photo.name}: pixels differ from load_uint8 by {level.mean():.2f} levels"
        infer_top = int(run_logits(session, load_image_tensor(photo, prep)[None].numpy()).argmax())
        assert int(page_probs.argmax()) == infer_top, f"{photo.name}: page top-1 differs from infer.py's"
        assert photo.name in shown, f"{photo.name} not shown on the page"
