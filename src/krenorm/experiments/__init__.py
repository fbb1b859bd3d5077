"""Experiment configs, the compare runner, sweeps (process pool or Dask), SQLite results store,
figures and reports.
"""
