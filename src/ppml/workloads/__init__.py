"""Example workloads: sample data and the jobs the docs and ``make run`` use."""
