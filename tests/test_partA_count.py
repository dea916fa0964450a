"""experiments/partA_count.py: the table, the JSON and flag errors."""

from __future__ import annotations

import json

import pytest

from experiments import partA_count


def test_json_output_has_the_contracted_fields(capsys):
    assert partA_count.main(["--filters", "32", "--organisation", "same", "--no-batch-norm", "--kernel-size", "3",
                             "--dense", "256", "--image-size", "224", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["params"], data["macs"], data["flops"]) == (442_122, 197_294_592, 394_589_184)
    assert len(data["layers"]) == 20 and data["layers"][0]["name"] == "block1.conv"
    assert data["closed_form"]["params"] == data["params"] and data["closed_form"]["flops"] == data["flops"]


def test_table_prints_totals_and_formula(capsys):
    partA_count.main(["--filters", "8", "--organisation", "same", "--image-size", "64"])
    out = capsys.readouterr().out
    assert "total" in out and "params = m(C·k² + 1)" in out and "agrees with the table" in out


def test_custom_organisation_has_no_closed_form(capsys):
    partA_count.main(["--organisation", "8,16,16,32,32", "--kernel-size", "3,3,5,5,7", "--image-size", "96",
                      "--batch-norm", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["closed_form"] is None
    assert [b["out_channels"] for b in data["spec"]["blocks"]] == [8, 16, 16, 32, 32]


def test_no_flags_count_the_cnn_that_part_a_train_trains_with_no_flags(capsys):
    from core.partA import PartAConfig

    partA_count.main(["--json"])
    spec = json.loads(capsys.readouterr().out)["spec"]
    expected = PartAConfig().spec(num_classes=10).to_dict()
    assert spec == expected, f"partA_count's default CNN {spec} is not PartAConfig's {expected}"


@pytest.mark.parametrize(("argv", "message"), [
    (["--activation", "swishy"], "unknown activation 'swishy'"),
    (["--image-size", "20"], "shrink below 1x1"),
    (["--organisation", "8,x"], "expected same|double|half or 5 comma-separated integers"),
])
def test_bad_flags_exit_with_the_reason(argv, message, capsys):
    try:  # a flag argparse refuses itself raises SystemExit(2); a bad value found later returns 2
        code = partA_count.main(argv)
    except SystemExit as info:
        code = info.code
    assert code == 2
    assert message in capsys.readouterr().err
