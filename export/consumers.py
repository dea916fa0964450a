"""The exported model in the runtimes people deploy it with: onnxruntime, OpenCV's DNN module, onnxruntime-web.

Each target is a function of all the parity batches at once (``export.parity.check_parity`` takes it in place of
an onnxruntime session), so torch stays the oracle for every runtime. OpenCV and onnxruntime-web run in a child
process: OpenCV answers a graph it cannot handle with a segmentation fault (GELU at opset 18 did), which must
become a clear line, not a dead exporter. onnxruntime-web runs its real wasm kernels under Node.js, from the npm
package the ``--web`` page ships (``export.web.ort_web_dist``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]
TARGETS = ("ort", "opencv", "web")
TIMEOUT_S = 600

_OPENCV = """import sys, json, numpy as np, cv2
net, d = cv2.dnn.readNetFromONNX(sys.argv[1]), sys.argv[2]
for i, shape in enumerate(json.load(open(f"{d}/shapes.json"))):
    net.setInput(np.fromfile(f"{d}/x{i}.bin", "<f4").reshape(shape))
    net.forward().astype("<f4").tofile(f"{d}/y{i}.bin")
"""
_NODE = """const [pkg, model, dir] = process.argv.slice(1), fs = require('fs'), ort = require(pkg);
ort.env.wasm.numThreads = 1;
(async () => {
  const s = await ort.InferenceSession.create(fs.readFileSync(model));
  const shapes = JSON.parse(fs.readFileSync(dir + '/shapes.json'));
  for (let i = 0; i < shapes.length; i++) {
    const b = fs.readFileSync(`${dir}/x${i}.bin`);
    const x = new ort.Tensor('float32', new Float32Array(b.buffer, b.byteOffset, b.length / 4), shapes[i]);
    const y = (await s.run({[s.inputNames[0]]: x}))[s.outputNames[0]].data;
    fs.writeFileSync(`${dir}/y${i}.bin`, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  }
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


class ConsumerUnavailableError(RuntimeError):
    """The runtime a target needs is not installed here (exit 2: install it or drop the target)."""


class ConsumerError(RuntimeError):
    """The runtime could not run the model (it crashed or refused it); the message says which and what to try."""


def opencv_version() -> str:
    """OpenCV's version, read in a child process (importing cv2 here would load its libraries into us)."""
    if importlib.util.find_spec("cv2") is None:
        raise ConsumerUnavailableError("--target opencv needs OpenCV's Python package: pip install "
                                       "opencv-python-headless")
    return subprocess.run([sys.executable, "-c", "import cv2; print(cv2.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _child_runner(what: str, command: list[str], model_path: Path) -> Runner:
    """``command DIR`` in a child process: the batches in ``DIR/x{i}.bin`` (+ ``shapes.json``), logits back from
    ``DIR/y{i}.bin``; a crash (a signal), a failure or a hang becomes a :class:`ConsumerError`."""

    def run(batches: list[np.ndarray]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="inat-cnn-consumer-") as tmp:
            for i, x in enumerate(batches):
                np.ascontiguousarray(x, dtype="<f4").tofile(f"{tmp}/x{i}.bin")
            Path(tmp, "shapes.json").write_text(json.dumps([list(x.shape) for x in batches]))
            try:
                done = subprocess.run([*command, tmp], capture_output=True, text=True, timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise ConsumerError(f"{what} did not finish {model_path.name} within {TIMEOUT_S} s") from exc
            if done.returncode < 0:
                raise ConsumerError(f"{what} crashed ({signal.Signals(-done.returncode).name}) running "
                                    f"{model_path.name}: it cannot run this graph; export at the default opset "
                                    f"(native Gelu) or serve the model with onnxruntime")
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise ConsumerError(f"{what} refused {model_path.name}: {last[-300:]}")
            return [np.fromfile(f"{tmp}/y{i}.bin", dtype="<f4").reshape(len(x), -1) for i, x in enumerate(batches)]

    return run


def opencv_runner(model_path: Path) -> Runner:
    """OpenCV DNN (``cv2.dnn.readNetFromONNX``) in a child process, one net for every batch."""
    return _child_runner(f"OpenCV {opencv_version()} DNN", [sys.executable, "-c", _OPENCV, str(model_path)],
                         model_path)


def web_runner(model_path: Path, package_dir: Path) -> Runner:
    """onnxruntime-web (wasm, one thread) under Node.js; ``package_dir`` is its npm package folder."""
    node = shutil.which("node")
    if node is None:
        raise ConsumerUnavailableError("--target web needs Node.js to run onnxruntime-web (Debian: apt-get install "
                                       "-y nodejs npm)")
    version = json.loads((package_dir / "package.json").read_text())["version"]
    return _child_runner(f"onnxruntime-web {version} (wasm)", [node, "-e", _NODE, str(package_dir),
                                                               str(model_path)], model_path)
