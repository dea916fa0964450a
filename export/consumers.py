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

_OPENCV = """import sys, numpy as np, cv2
net = cv2.dnn.readNetFromONNX(sys.argv[1])
for i in range(int(sys.argv[3])):
    net.setInput(np.load(f"{sys.argv[2]}/x{i}.npy")); np.save(f"{sys.argv[2]}/y{i}.npy", net.forward())
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


def _run_child(what: str, command: list[str], model_path: Path) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ConsumerError(f"{what} did not finish {model_path.name} within {TIMEOUT_S} s") from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ConsumerError(f"{what} crashed ({name}) running {model_path.name}: it cannot run this graph; "
                            f"export at the default opset (native Gelu) or serve the model with onnxruntime")
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConsumerError(f"{what} refused {model_path.name}: {last[-300:]}")


def opencv_runner(model_path: Path) -> Runner:
    """OpenCV DNN (``cv2.dnn.readNetFromONNX``) in a child process, one net for every batch."""
    what = f"OpenCV {opencv_version()} DNN"

    def run(batches: list[np.ndarray]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="inat-cnn-opencv-") as tmp:
            for i, x in enumerate(batches):
                np.save(f"{tmp}/x{i}.npy", np.ascontiguousarray(x, dtype=np.float32))
            _run_child(what, [sys.executable, "-c", _OPENCV, str(model_path), tmp, str(len(batches))], model_path)
            return [np.load(f"{tmp}/y{i}.npy").reshape(len(x), -1) for i, x in enumerate(batches)]

    return run


def web_runner(model_path: Path, package_dir: Path) -> Runner:
    """onnxruntime-web (wasm, one thread) under Node.js; ``package_dir`` is its npm package folder."""
    node = shutil.which("node")
    if node is None:
        raise ConsumerUnavailableError("--target web needs Node.js to run onnxruntime-web (Debian: apt-get install "
                                       "-y nodejs npm)")
    version = json.loads((package_dir / "package.json").read_text())["version"]

    def run(batches: list[np.ndarray]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="inat-cnn-web-") as tmp:
            for i, x in enumerate(batches):
                np.ascontiguousarray(x, dtype="<f4").tofile(f"{tmp}/x{i}.bin")
            Path(tmp, "shapes.json").write_text(json.dumps([list(x.shape) for x in batches]))
            _run_child(f"onnxruntime-web {version} (wasm)", [node, "-e", _NODE, str(package_dir), str(model_path),
                                                            tmp], model_path)
            return [np.fromfile(f"{tmp}/y{i}.bin", dtype="<f4").reshape(len(x), -1) for i, x in enumerate(batches)]

    return run
