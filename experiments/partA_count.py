"""Print the Part A CNN's per-layer shapes, parameters, MACs and FLOPs, and the closed formula.

    python experiments/partA_count.py                  # partA_train.py's default CNN, at 224 px
    python experiments/partA_count.py --filters 32 --organisation same --no-batch-norm --dense 256 --json
"""

from __future__ import annotations

import argparse
import json
import sys

from core.cli import run_script
from core.model import CLOSED_FORMULA, CNNSpec, closed_form, count_layers, count_totals, format_count, uniform_knobs
from core.partA import PartAConfig
from experiments.flags import add_spec_flags, spec_from_args


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_flags(parser, PartAConfig().to_flat())  # the same CNN as partA_train.py with no flags
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


def report(spec: CNNSpec) -> dict:
    """Everything the script prints, as plain data (per image, batch 1)."""
    totals = count_totals(spec)
    out = {
        "spec": spec.to_dict(),
        "params": totals.params,
        "macs": totals.macs,
        "flops": totals.flops,
        "total_ops": totals.total_ops,
        "layers": [
            {"name": r.name, "kind": r.kind, "out_shape": list(r.out_shape), "params": r.params,
             "macs": r.macs, "flops": r.flops, "total_ops": r.total_ops}
            for r in count_layers(spec)
        ],
        "closed_form": None,
    }
    knobs = uniform_knobs(spec)
    if knobs is not None:
        m, k, n = knobs
        cf = closed_form(m, k, n, spec.height_width, spec.in_channels, spec.head.num_classes,
                         batch_norm=spec.blocks[0].batch_norm)
        out["closed_form"] = {"m": m, "k": k, "n": n, "params": cf.params, "macs": cf.macs, "flops": cf.flops,
                              "formula": CLOSED_FORMULA}
    return out


def format_table(data: dict) -> str:
    lines = [f"{'layer':<14}{'kind':<9}{'output':>16}{'params':>13}{'MACs':>16}{'FLOPs':>16}"]
    for r in data["layers"]:
        shape = "x".join(map(str, r["out_shape"]))
        lines.append(f"{r['name']:<14}{r['kind']:<9}{shape:>16}{r['params']:>13,}{r['macs']:>16,}{r['flops']:>16,}")
    lines.append(f"{'total':<23}{'':>16}{data['params']:>13,}{data['macs']:>16,}{data['flops']:>16,}")
    lines.append(
        f"per image: {format_count(data['params'])} params, {format_count(data['macs'])} MACs, "
        f"{format_count(data['flops'])} FLOPs (= 2 x MACs), {format_count(data['total_ops'])} total ops "
        "(with bias, BN, activations, pooling)"
    )
    cf = data["closed_form"]
    if cf is not None:
        lines += ["", CLOSED_FORMULA,
                  f"with m={cf['m']}, k={cf['k']}, n={cf['n']}: params = {cf['params']:,}, MACs = {cf['macs']:,}, "
                  f"FLOPs = {cf['flops']:,} (agrees with the table)"]
    else:
        lines.append("(the closed formula covers the uniform case: same filters and kernel size in every block)")
    return "\n".join(lines)


def count(args: argparse.Namespace) -> int:
    data = report(spec_from_args(args))  # a bad combination: ValueError naming the value (exit 2)
    print(json.dumps(data, indent=2) if args.json else format_table(data))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script("partA_count", get_args_parser(), count, argv)


if __name__ == "__main__":
    sys.exit(main())
