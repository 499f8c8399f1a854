"""Imported by the trial workers' forkserver before numpy: OpenBLAS loads with one thread.

OpenBLAS sizes its thread pool when it loads, from ``OPENBLAS_NUM_THREADS`` (else one a
core). A worker forked from the forkserver builds that pool again on its first BLAS call,
although threadpoolctl has limited it to ``cpus_per_trial`` threads by then, and every BLAS
call after pays for the threads it does not use. Measured (2 cores, scikit-learn's SGD on 784 features,
one thread allowed): a worker's first ``partial_fit`` of 30 rows took 140-160 ms and the next
ones 10-16 ms; loaded with one thread, 17 ms and 3.5 ms. Through ``tune``, 12 trials of
batch 30 and 300 (24 steps) took 5.8-6.0 CPU-s before and ~5.3 after. A trial given more
cores still gets them (threadpoolctl raises the limit); a value the user set is kept.
"""

import os

#: True when frugalml chose the value: a worker then sets it to its own ``cpus_per_trial``, for
#: the processes its trial starts
DEFAULTED = "OPENBLAS_NUM_THREADS" not in os.environ
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
