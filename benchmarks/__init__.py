"""Benchmarks of the Croc-specific pieces against their alternatives: one script per question, each printing a
Markdown table and writing JSON under `benchmarks/results/`."""
