"""experiments/prepare_data.py and core.data.checks: counts, problems, exit codes."""

from __future__ import annotations

from PIL import Image

from core.data import check_dataset
from experiments.prepare_data import main


def test_check_reports_counts_skips_and_conversions(tiny_imagefolder, capsys):
    (tiny_imagefolder / "train" / "Aves" / "broken.jpg").write_text("not a jpeg")
    (tiny_imagefolder / "val" / "Fungi" / "notes.txt").write_text("x")
    Image.new("L", (20, 20), 5).save(tiny_imagefolder / "train" / "Fungi" / "gray.png")
    report = check_dataset(tiny_imagefolder)
    assert report.train_counts == {"Amphibia": 10, "Aves": 10, "Fungi": 11}, report.train_counts
    assert report.test_counts == {"Amphibia": 4, "Aves": 4, "Fungi": 4}
    assert {s.path.name for s in report.skipped} == {"broken.jpg", "notes.txt"}
    assert report.converted == {"L": 1} and report.problems == []

    assert main(["--check", "--data-dir", str(tiny_imagefolder)]) == 0
    out = capsys.readouterr().out
    assert "Fungi" in out and "11" in out and "broken.jpg" in out and "status: usable" in out, out


def test_check_fails_when_a_class_has_no_decodable_image(tiny_imagefolder, capsys):
    for f in (tiny_imagefolder / "val" / "Aves").iterdir():
        f.write_bytes(b"garbage")
    assert main(["--check", "--data-dir", str(tiny_imagefolder)]) == 2, "unusable data is bad input (docs/cli.md)"
    captured = capsys.readouterr()
    assert "no decodable images in val/ for classes ['Aves']" in captured.out and "NOT usable" in captured.out
    last = captured.err.strip().splitlines()[-1]  # after the log lines of the decode, as in a terminal
    assert last.startswith("prepare_data: error: ") and "add decodable images" in last, captured.err


def test_check_warns_about_a_class_with_one_training_image(tiny_imagefolder, capsys):
    for f in sorted((tiny_imagefolder / "train" / "Fungi").iterdir())[1:]:
        f.unlink()
    assert main(["--check", "--data-dir", str(tiny_imagefolder)]) == 0, "one image is usable, with a warning"
    out = capsys.readouterr().out
    assert "WARNING: classes ['Fungi'] have a single decodable training image" in out and "status: usable" in out


def test_layout_error_and_missing_action_exit_codes(tmp_path, capsys):
    assert main(["--check", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--download", "--demo"]) == 2


def test_demo_then_check(tmp_path, capsys):
    assert main(["--demo", "--check", "--data-dir", str(tmp_path / "demo"), "--demo-train-per-class", "3",
                 "--demo-val-per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert f"demo dataset: {tmp_path / 'demo'}" in out and "Reptilia" in out and "status: usable" in out
