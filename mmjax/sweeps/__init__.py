"""Sweeps: a grid of runs from one base config, their final metrics as one table.

`grid.py` expands a sweep spec into runs with stable workdir names, `config_io.py` builds
a run's config, `flops.py` counts its training compute and `collect.py` turns finished
workdirs into table rows (`tools/sweep.py` runs them, `tools/plot_scaling.py` fits them).
"""
