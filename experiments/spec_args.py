"""The ``make_spec`` flags shared by every Part A script (count, train), so they read the same everywhere."""

from __future__ import annotations

import argparse

from core.model import ACTIVATION_NAMES, ORGANISATIONS, CNNSpec, make_spec


def parse_organisation(text: str) -> str | list[int]:
    """``same|double|half`` or a comma list of 5 channel counts (``16,32,64,64,128``)."""
    if "," not in text:
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--organisation {text!r}: expected {'|'.join(ORGANISATIONS)} or 5 comma-separated integers"
        ) from None


def parse_kernel_size(text: str) -> int | list[int]:
    """One kernel size for every block, or a comma list of 5."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--kernel-size {text!r}: expected an int or 5 comma-separated ints") from None
    return values[0] if len(values) == 1 else values


def add_spec_arguments(
    parser: argparse.ArgumentParser, help_overrides: dict[str, str] | None = None
) -> argparse._ArgumentGroup:
    """Add the architecture flags (mirroring :func:`core.model.spec.make_spec`) in their own group.

    ``help_overrides`` maps a flag's dest (``image_size``, ``num_classes``, ...) to the help text a script
    needs instead, e.g. when the dataset rather than the flag decides the value.
    """
    group = parser.add_argument_group("architecture (Part A CNN)")
    group.add_argument("--filters", type=int, default=32, help="filters in the first conv block (default 32)")
    group.add_argument("--organisation", "--organization", type=parse_organisation, default="same",
                       help="how filters change per block: same | double | half | 5 comma-separated counts")
    group.add_argument("--kernel-size", type=parse_kernel_size, default=3,
                       help="conv kernel size: one int, or 5 comma-separated ints (padding is k//2)")
    group.add_argument("--activation", default="relu", type=str.lower,
                       help=f"activation after every conv and the dense layer: {', '.join(ACTIVATION_NAMES)}")
    group.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=False,
                       help="batch norm after every conv (default off)")
    group.add_argument("--dropout", type=float, default=0.0, help="dropout before the output layer, in [0, 1)")
    group.add_argument("--dense", type=int, default=256, help="units in the dense layer (default 256)")
    group.add_argument("--image-size", type=int, default=224, help="square input side in pixels (default 224)")
    group.add_argument("--in-channels", type=int, default=3, help="input channels (default 3, RGB)")
    group.add_argument("--num-classes", type=int, default=10, help="output classes (default 10)")
    overrides = dict(help_overrides or {})
    for action in group._group_actions:
        action.help = overrides.pop(action.dest, action.help)
    if overrides:
        raise ValueError(f"help_overrides for unknown flags {sorted(overrides)}")
    return group


def spec_from_args(args: argparse.Namespace) -> CNNSpec:
    """The spec the flags describe; a bad combination raises ValueError naming the value."""
    return make_spec(
        filters=args.filters,
        organisation=args.organisation,
        kernel_size=args.kernel_size,
        activation=args.activation,
        batch_norm=args.batch_norm,
        dropout=args.dropout,
        dense_units=args.dense,
        image_size=args.image_size,
        in_channels=args.in_channels,
        num_classes=args.num_classes,
    )
