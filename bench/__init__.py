"""Benchmarks (run as scripts: ``python bench/<name>.py``) and the development fixtures they
share with the tests: throw-away Redis/PostgreSQL servers (``bench.services``), tiny random
models (``bench.tiny``), the schemathesis runner (``bench.schemathesis_runner``).

Tests import from here; nothing here imports the tests (checked by ``tests/test_boundaries.py``).
"""
