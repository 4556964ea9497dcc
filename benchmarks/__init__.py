"""Benchmarks: each script measures one speed or repeatability claim and files the result as evidence
under evidence/runs/ (`make bench`, `python benchmarks/NAME.py`)."""
