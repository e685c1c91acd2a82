"""Side-by-side benchmarks of percep_lightning against the peer packages and a bare-backbone floor.

Run ``python -m benchmarks`` (or ``python benchmarks/run.py``); see ``benchmarks/README.md`` for what is
measured and the latest results.
"""
