"""Read models over the store: what every client shows, computed here, once.

The store holds runs, curves and masks as they were recorded; a view turns them into
what a reader wants to see (a grid's progress, results averaged over seeds, the list
of experiments). Clients (the batch report, the explorer, ``lotto-tui experiments``)
read through these modules and only format what they return: no client computes
science, and no two clients compute the same number two ways.

- :mod:`~lotto_engine.views.progress`: a plan's progress (per-job rows, epochs done,
  ETAs) and the config and plan of a stored experiment;
- :mod:`~lotto_engine.views.results`: results per grid point over seeds (the results
  table and the figures), mean training curves, the numerics settings of the runs;
- :mod:`~lotto_engine.views.experiments`: one summary per experiment in the store.

Views only read: none of them writes to the store.
"""
