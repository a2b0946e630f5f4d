"""How one job's processes are started when it has several: torchrun on this machine (`torchrun.py`
launches, `agent.py` is the torchrun agent, `rank.py` is each process), or an existing Ray cluster
(`ray_cluster.py`).

The worker (daemon/service/worker.py) stays the one process that talks to the job queue; the ranks
train and rank 0 leaves its outcome in data/runs/<job>/outcome.json for the worker to record.
"""
