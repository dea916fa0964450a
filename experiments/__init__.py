"""The user's scripts (argparse → dataclasses → core), one job each; ``bench/`` holds the benchmark's sections."""
