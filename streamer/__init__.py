"""ser-live: offline, real-time multimodal speech emotion analysis."""

import os
import sys

__version__ = "0.1.0"

# NumPy's BLAS (OpenBLAS) starts a thread per core for every matrix product. Ours are small
# (log-mel filters, prosody, fusion) and run on many threads of our own at once: with the
# machine busy, each product then waits for its pool (measured on 2 cores under load: the
# Whisper log-mel of 2.5 s took 16 ms with 2 BLAS threads, 0.6 ms with 1). One BLAS thread
# per caller; torch (OpenMP) and CTranslate2 keep their own thread settings. Set before NumPy loads;
# an environment that sets these keeps its own.
_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_chosen = any(v in os.environ for v in _BLAS_VARS)
for _var in _BLAS_VARS:
    os.environ.setdefault(_var, "1")
# Where NumPy was imported first, its BLAS has already read the environment (OMP_NUM_THREADS,
# else a thread per core): set its pool now. The thread count also changes the bits of a product
# (OpenBLAS on an AVX2 CPU, measured: the Whisper log-mel of the same 2.5 s differed with 1 and 2
# threads, so a Ray replica, where Ray sets OMP_NUM_THREADS=1, answered ~0.004 apart from the
# same model in the calling process). One thread everywhere gives the same answers everywhere.
if not _chosen and "numpy" in sys.modules:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
