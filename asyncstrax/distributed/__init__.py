"""Many runs on Dask ``distributed``: one run per task, results to shared storage.

A run is the unit of work: each is one Dask task that rebuilds the Context from a picklable
description (``ContextSpec``: plugin classes by import path, configuration, storage folders,
context configuration), makes the targets with the ordinary single-run engine and saves them to
the storage every worker sees. Nothing is sent back but a small ``RunReport``; the data stays
on disk, where ``get_df_many`` (eager) and ``lazy_dataframe`` (a ``dask.dataframe`` with one
partition per stored chunk) read it.

- ``process_runs(context, run_ids, targets, client=None)`` / ``aprocess_runs(...)``: runs
  already stored (same lineage) are skipped before anything is submitted; a failing run is
  reported with its error while the others go on; interrupting the call (KeyboardInterrupt, or
  cancelling the task awaiting ``aprocess_runs``) cancels the runs not yet finished. Without a
  client a ``LocalCluster`` sized to the machine is started and closed again
  (``local_client``, which says why: processes, one thread each, not daemonic, no malloc
  trimming).
- ``get_df_many(ctx, run_ids, target)``: one pandas frame, a ``run_id`` column first.
- ``lazy_dataframe(ctx_or_spec, run_ids, target, columns=None)``: larger than memory.
- ``asyncstrax process RUN... --target T --storage PATH --plugins MODULE``: the command line.

Dask is an optional dependency (``pip install "asyncstrax[distributed]"``): this module imports
without it, and every call that needs it says what to install. ``import asyncstrax`` never
imports this module.

Plugins must be importable on the workers under the same module path as here (``module:Class``):
classes defined in ``__main__``, in a notebook or inside a function cannot be sent by name, and
``ContextSpec.from_context`` says so. With ``processes=True`` (the default cluster), workers are
started with this process's ``sys.path``; on a remote cluster install or upload the module.

The package, one job per module:

- ``spec``: ``ContextSpec``, the picklable description of a Context;
- ``reports``: ``RunReport`` and ``RunReports``;
- ``runs``: ``process_runs``, ``aprocess_runs``, ``process_one_run`` (a worker's task) and
  ``local_client``;
- ``frames``: ``get_df_many`` and ``lazy_dataframe``;
- ``command``: ``asyncstrax process`` (``add_process_arguments``, ``run_process``);
- ``dependencies``: importing Dask when needed, or saying what to install.
"""

# "X as X": importable here as before, though not in __all__ (constants, and what tests drive)
from .command import add_process_arguments, run_process
from .dependencies import INSTALL_HINT as INSTALL_HINT
from .frames import get_df_many, lazy_dataframe
from .reports import RunReport, RunReports
from .runs import LOCAL_CLUSTER_DASK_CONFIG as LOCAL_CLUSTER_DASK_CONFIG
from .runs import _Batch as _Batch
from .runs import _wait_sync as _wait_sync
from .runs import aprocess_runs, local_client, local_cluster_kwargs, process_one_run, process_runs
from .spec import ContextSpec

__all__ = [
    "ContextSpec",
    "RunReport",
    "RunReports",
    "add_process_arguments",
    "aprocess_runs",
    "get_df_many",
    "lazy_dataframe",
    "local_client",
    "local_cluster_kwargs",
    "process_one_run",
    "process_runs",
    "run_process",
]
