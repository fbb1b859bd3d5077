"""Experiments: one pipeline for the main job (`compare`, `demo`) and for sweeps
(docs/architecture.md "One pipeline"). A config (compare or sweep TOML, or the same objects from
Python) expands to frozen, validated `ExperimentSpec`s; one runner executes a spec (theory at
width N or N = ∞, retuned priors, sampled network); one SQLite store records it (resumable, local
process pool or Dask); one row type (`rows.ResultRow`) feeds the agreement analysis, the figures
and the report.
"""
