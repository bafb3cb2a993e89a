"""Benchmarks: Sagawire against the limits of the same machine, measured in the same run."""
