"""Benchmarks, run with ``make bench``: each writes JSON and a Markdown table under bench/results/.

Ratios are always measured side by side in one run, so they hold on whatever machine runs them.
"""
