"""pytest-vdens benchmarks (issue 5): every comparison side by side, in one run.

Run `python -m benchmarks` (add `--quick` for a smoke run, `--check` to assert the
targets). See benchmarks/README.md and docs/performance.md.
"""
