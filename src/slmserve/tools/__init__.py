"""Seed 004's tools: explore, monitor, compare, and the benchmark's charts.

Nothing here is on the server's path. matplotlib (the `slmserve[tools]` extra) is imported only inside plots.py's
functions, so `import slmserve.cli` never pulls it in.
"""
