"""Dask backend for the matrix runner.

``--backend dask`` starts a ``LocalCluster`` (one thread per worker, ``--jobs`` workers);
``--scheduler tcp://HOST:PORT`` joins an existing cluster instead. Workers run cells and
write their records straight into the shared results folder (atomic renames), and also
return them to the client, which writes the summary table. On a multi-machine cluster the
results folder must therefore be on a file system every worker sees (NFS, a shared disk).
"""
from __future__ import annotations


def dask_map(fn, profile, items, jobs, args, scheduler=None):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise RuntimeError("--backend dask needs dask[distributed]: pip install 'stealbench[dask]'") from e
    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = client.map(fn, [profile] * len(items), items, *[[a] * len(items) for a in args],
                             pure=False)
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
