"""The pages people read, opened in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

A tiny but real run is made here with the real code: a 3-trial Part A sweep at 32 px for 1 epoch (one trial
crashes on purpose, through the real backend, so the failure summary shows), ``evaluate_checkpoint`` on its
``best.pt``, the sweep rerun (which only rebuilds its outputs, now linking the evaluation), a Part B
comparison of two strategies with the sweep's best trial as the Part A row, and a sweep whose every trial
fails. Each page is opened at 1400 px and must: not scroll sideways and have no element wider than the
viewport, render every image (``naturalWidth > 0``) and every plotly figure (an SVG in each container),
show the best number (read independently from the CSV/JSON the run wrote) visibly, keep every relative
link pointing at a file that exists, and make no request that leaves the machine (only ``file:`` and
``data:``). Playwright launches the system Chromium (``executable_path``): no browser download.

Set ``INAT_CNN_SCREENSHOT_DIR`` to keep full-page screenshots of the pages (docs/reports.md describes them).
The tests skip only where Chromium is not installed (``apt-get install -y chromium``; ``.ci/run`` does it).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from conftest import make_tiny_imagefolder

CHROMIUM = Path(os.environ.get("INAT_CNN_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1400, 900
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.is_file(),
                                 reason=f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install -y "
                                        "chromium; .ci/run installs it)")]

TINY_SWEEP = {
    "name": "tiny", "method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
    "parameters": {"image_size": {"value": 32}, "epochs": {"value": 1}, "batch_size": {"value": 8},
                   "filters": {"value": 4}, "dense_units": {"value": 8}, "num_workers": {"value": 0},
                   "activation": {"values": ["relu", "gelu", "silu"]},
                   "optimizer": {"parameters": {"name": {"value": "adam"}, "lr": {"values": [0.003, 0.01]}}}},
    "run_cap": 3,
}
CRASH = "RuntimeError: CUDA out of memory (raised by the test for activation=silu)"


class CrashOnSilu:
    """The real Part A trial, except that activation=silu raises before training: a crashed trial the real
    backend records (Optuna FAIL, trial.json error) like any other."""

    def __init__(self, inner, always: bool = False):
        self.inner, self.always = inner, always

    def configure(self, values):
        return self.inner.configure(values)

    def run(self, config, run_dir, **kwargs):
        if self.always or config.activation == "silu":
            raise RuntimeError(CRASH.removeprefix("RuntimeError: "))
        return self.inner.run(config, run_dir, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Make every page from a tiny finished run; returns page name -> HTML path."""
    from core.data import DataConfig
    from core.explain import EvalConfig, evaluate_checkpoint
    from core.finetune import PartBConfig, run_compare
    from core.partA import PartAConfig
    from core.sweep import SweepSettings, parse_sweep_config, partA_program, run_sweep
    from core.train import TrainConfig

    root = tmp_path_factory.mktemp("pages")
    data = make_tiny_imagefolder(root / "data", train_per_class=8, test_per_class=4)
    cfg = parse_sweep_config(TINY_SWEEP)
    trial = CrashOnSilu(partA_program(PartAConfig.from_flat({"data_dir": data, "device": "cpu"})))
    settings = SweepSettings(name="tiny", out_dir=root / "runs", backend="local", tracker_mode="disabled")
    summary = run_sweep(cfg, settings, trial)
    assert summary.best is not None, [r.error for r in summary.records]
    evaluate_checkpoint(EvalConfig(checkpoint=summary.sweep_dir / "best.pt", data_dir=data, wandb_mode="disabled",
                                   device="cpu", batch_size=16))
    run_sweep(cfg, settings, trial)  # a finished sweep: only rebuilds report.html, which now finds the evaluation
    part_b = PartBConfig(arch="mobilenet_v2", weights=None, image_size=32,
                        data=DataConfig(data_dir=data, batch_size=8, normalization="imagenet"),
                        train=TrainConfig(epochs=1, lr=3e-3, device="cpu"))
    run_compare(part_b, root / "runs" / "cmp", strategies=("head", "full"), partA_run=summary.best.run_dir,
                tracker_mode="disabled")
    failed = run_sweep(parse_sweep_config({**TINY_SWEEP, "name": "failed", "run_cap": 2}),
                       replace(settings, name="failed"), CrashOnSilu(trial.inner, always=True))
    assert all(r.state == "FAIL" for r in failed.records) and len(failed.records) == 2
    return {"report": summary.sweep_dir / "report.html", "evaluation": summary.sweep_dir / "eval" / "evaluation.html",
            "comparison": root / "runs" / "cmp" / "comparison.html", "failed": failed.sweep_dir / "report.html"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=FLAGS, headless=True,
            viewport={"width": WIDTH, "height": HEIGHT})
        context.set_default_timeout(60_000)
        requests: list[str] = []

        def guard(route):  # anything that is not a local file or inline data never leaves the machine
            requests.append(route.request.url)
            if route.request.url.startswith(LOCAL_SCHEMES):
                route.continue_()
            else:
                route.abort()

        context.route("**/*", guard)
        context.on("request", lambda r: requests.append(r.url))
        yield context, requests
        context.close()


OVERFLOW_JS = """() => {
  const w = window.innerWidth, bad = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('#js-plotly-tester')) continue;  // plotly's off-screen text-measuring node
    const s = getComputedStyle(el);
    if (s.display === 'none' || s.visibility === 'hidden') continue;
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > w + 1 || r.left < -1))
      bad.push(`${el.tagName.toLowerCase()}.${el.className} ${Math.round(r.left)}..${Math.round(r.right)}: `
               + (el.textContent || '').trim().slice(0, 60));
  }
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: w, bad: bad.slice(0, 20)};
}"""
LINKS_JS = """() => [...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href])"""


def open_page(browser, path: Path, name: str):
    context, requests = browser
    requests.clear()
    page = context.new_page()
    page.goto(path.resolve().as_uri(), wait_until="load")
    plots = page.locator(".plot").count()
    if plots:
        page.wait_for_function("() => [...document.querySelectorAll('.plot')].every(p => p.querySelector('svg'))")
    if os.environ.get("INAT_CNN_SCREENSHOT_DIR"):
        out = Path(os.environ["INAT_CNN_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    return page, plots


def assert_reads_well(browser, page, path: Path) -> None:
    """No sideways scrolling, every image decoded, every link local and alive, nothing fetched from outside."""
    _, requests = browser
    layout = page.evaluate(OVERFLOW_JS)
    assert layout["scrollWidth"] <= layout["innerWidth"], f"{path.name} scrolls sideways: {layout}"
    assert layout["bad"] == [], f"{path.name}: elements wider than the {WIDTH} px viewport: {layout['bad']}"
    images = page.evaluate("() => [...document.images].map(i => [i.alt, i.complete, i.naturalWidth])")
    broken = [alt for alt, complete, width in images if not complete or width <= 0]
    assert broken == [], f"{path.name}: images not rendered: {broken}"
    for raw, resolved in page.evaluate(LINKS_JS):
        assert not raw.startswith(("/", "file:", "http:", "https:")), f"{path.name}: link {raw!r} is not relative"
        target = Path(unquote(resolved.removeprefix("file://").split("#")[0]))
        assert target.exists(), f"{path.name}: link {raw!r} points at a missing file"
    outside = [u for u in requests if not u.startswith(LOCAL_SCHEMES)]
    assert outside == [], f"{path.name} requested {outside}"
    assert requests, "the request recorder saw nothing: it is not wired up"


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_sweep_report(runs, browser):
    path = runs["report"]
    page, plots = open_page(browser, path, "sweep_report")
    assert_reads_well(browser, page, path)
    rows = csv_rows(path.parent / "results.csv")
    best = max(float(r["val_acc"]) for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r["val_acc"])
    shown = page.locator(".best-value")
    assert shown.is_visible() and shown.inner_text() == f"{best:.4g}", (shown.inner_text(), best)
    failure = page.locator(".callout.bad")
    assert failure.is_visible() and "1 of 3 trials failed" in failure.inner_text()
    assert CRASH in failure.inner_text(), failure.inner_text()
    crashed = next(r for r in rows if r["state"] == "FAIL")
    assert failure.locator(f'a[href="trials/{Path(crashed["run_dir"]).name}/"]').count() == 1, \
        "the failure summary links the crashed trial's folder"
    values = {r["val_acc"] for r in rows if r["val_acc"]}
    expected = 5 if len(values) > 1 else 4  # importance needs trials that differ; the rest draw any result
    assert plots == expected, f"parallel coordinates, importance, metric vs time, history, learning curves: {plots}"
    scripts = page.evaluate("() => [...document.scripts].map(s => s.text.length)")
    assert sum(n > 1_000_000 for n in scripts) == 1, f"plotly.js is inlined exactly once: {scripts}"
    assert page.evaluate("() => typeof Plotly") == "object"
    link = page.get_by_role("link", name="evaluation page")
    assert link.is_visible() and link.get_attribute("href") == "eval/evaluation.html"
    best_cfg = yaml.safe_load((path.parent / "best_config.yaml").read_text())
    best_box = page.locator(".callout.good").inner_text()
    assert f"Best trial: {best_cfg['trial']}" in best_box, best_box
    params = best_cfg["parameter_count"]
    expected = f"{params / 1000:.1f}\u00a0K" if params >= 1000 else str(params)  # "410.7 K", the format
    assert expected in best_box, f"parameter count {params} should read {expected!r}: {best_box}"
    front = page.locator("#front")  # the accuracy-cost front: its figure and exactly results.csv's pareto trials
    front.scroll_into_view_if_needed()
    assert front.is_visible() and front.locator("img").evaluate("i => i.naturalWidth") > 0
    listed = {int(t) for t in front.locator("tbody tr td:first-child a").all_inner_texts()}
    assert listed == {int(r["number"]) for r in rows if r["pareto"] == "True"} != set(), listed
    point = page.locator("#plot-metric_vs_time .scatterlayer .point").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()  # plotly's drag layer sits on top of the points: move the mouse, as a person does
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#plot-metric_vs_time .hoverlayer .hovertext")
    assert "trial" in page.locator("#plot-metric_vs_time .hoverlayer").text_content(), "hover shows the trial"
    page.close()


def test_evaluation_page(runs, browser):
    path = runs["evaluation"]
    page, plots = open_page(browser, path, "evaluation")
    assert_reads_well(browser, page, path)
    metrics = json.loads((path.parent / "test_metrics.json").read_text())
    shown = page.locator(".test-accuracy")
    assert shown.is_visible() and shown.inner_text() == f"{100 * metrics['accuracy']:.1f}%"
    alts = page.evaluate("() => [...document.images].map(i => i.alt)")
    for name in ("confusion matrix", "predictions grid", "gradcam", "filters conv1", "feature maps conv1",
                 "guided backprop conv5"):
        assert name in alts, f"{name} missing from the evaluation page: {alts}"
    assert plots == 0 and page.evaluate("() => typeof Plotly") == "undefined", "no plotly.js where no plot is"
    back = page.get_by_role("link", name="← sweep report")
    assert back.get_attribute("href") == "../report.html"
    page.close()


def test_comparison_page(runs, browser):
    path = runs["comparison"]
    page, _ = open_page(browser, path, "comparison")
    assert_reads_well(browser, page, path)
    rows = csv_rows(path.parent / "comparison.csv")
    assert [r["strategy"] for r in rows] == ["head", "full", "scratch"]
    best = max(float(r["test_acc"]) for r in rows)
    shown = page.locator(".best-value")
    assert shown.is_visible() and shown.inner_text() == f"{100 * best:.1f}%"
    assert page.evaluate("() => document.images.length") == 1, "accuracy_curves.png"
    table = page.locator("table").first.inner_text()
    for r in rows:
        assert r["run"] in table, f"{r['run']} missing from the table"
    page.close()


def test_all_failed_sweep_shows_the_error_and_no_empty_figures(runs, browser):
    path = runs["failed"]
    page, plots = open_page(browser, path, "all_failed")
    assert_reads_well(browser, page, path)
    failure = page.locator(".callout.bad")
    assert failure.is_visible() and "2 of 2 trials failed" in failure.inner_text() and CRASH in failure.inner_text()
    assert plots == 0 and page.evaluate("() => document.images.length") == 0, "no placeholder figures"
    assert not list(path.parent.glob("*.png")), "no placeholder PNGs written either"
    assert "No result yet" in page.locator("body").inner_text()
    page.close()

