"""Part B: fine-tuning strategies as small objects, one Part B run, and the comparison of strategies with Part A."""
