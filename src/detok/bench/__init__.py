"""Benchmark suites that reproduce the paper's claims (`detok bench`)."""
