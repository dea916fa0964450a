"""The benchmark's sections and their shared framework; ``experiments/benchmark.py`` is the one entry.
"""
