"""Benchmarks: the emulator measured side by side with a bare websockets server.

`python -m bench --quick` (every scenario small, under a minute) or `--full`;
see `docs/performance.md` for what is measured and the last full run.
"""
