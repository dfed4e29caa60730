"""Parameter sweeps: a grid of training runs, in parallel on Dask, streamed to a results file.

A grid is the product of named axes (depth, sigma_w2, activation, optimizer, lr, seed, ...; see
:data:`SETTINGS`); each point is one seeded training run (:func:`train_point`), or a function of
your own. :func:`run` runs the points on an embedded Dask ``LocalCluster`` (one worker process per
core), on an existing Dask cluster (``scheduler="tcp://host:8786"``), or in this process
(``workers=0``), writes one JSON line per point as it completes, and skips the points already in
the results file when run again. ``nnlab sweep FILE.toml`` is the same from the command line
(:func:`load` reads the file). See docs/sweeps.md.

>>> import nnlab as nl
>>> rows = nl.sweep.run({"depth": [1, 2]}, fixed={"width": 8, "steps": 5, "samples": 64}, workers=0,
...                     progress=False)
>>> [r["params"]["depth"] for r in rows], [r["status"] for r in rows]
([1, 2], ['ok', 'ok'])
"""

from .engine import MISSING_DASK, THREAD_ENV, Progress, execute, read_results, run
from .grid import RECORDS, SETTINGS, Grid, GridError, Setting, SweepError, SweepFile, expand, load, point_key
from .point import build_net, dataset, decay_rate, train_point, warm, weight_grad_norms

__all__ = ["run", "Grid", "load", "read_results", "point_key", "train_point", "execute", "SETTINGS", "RECORDS",
           "Setting", "SweepFile", "GridError", "SweepError", "Progress", "THREAD_ENV", "MISSING_DASK", "expand",
           "build_net", "dataset", "decay_rate", "warm", "weight_grad_norms"]
