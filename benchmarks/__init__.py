"""effbench's own benchmark suites; run them with ``python -m benchmarks run SUITE`` (see README.md)."""
