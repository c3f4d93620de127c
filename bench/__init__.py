"""Benchmarks: `python -m bench raft ...` (replicated writes over HTTP, stack beside etcd).

The older scripts beside this package (`raft_core_bench.py`, `storage_bench.py`) run
on their own: `python bench/raft_core_bench.py`.
"""
