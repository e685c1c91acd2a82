"""``python -m benchmarks``: run every benchmark and write the table (see ``benchmarks/run.py``)."""

from benchmarks.run import main

if __name__ == "__main__":
    raise SystemExit(main())
