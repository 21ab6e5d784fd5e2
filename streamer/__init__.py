"""ser-live: offline, real-time multimodal speech emotion analysis."""

import os

__version__ = "0.1.0"

# NumPy's BLAS (OpenBLAS) starts a thread per core for every matrix product. Ours are small
# (log-mel filters, prosody, fusion) and run on many threads of our own at once: with the
# machine busy, each product then waits for its pool (measured on 2 cores under load: the
# Whisper log-mel of 2.5 s took 16 ms with 2 BLAS threads, 0.6 ms with 1). One BLAS thread
# per caller; torch (OpenMP) and CTranslate2 keep their own thread settings. Set before NumPy loads;
# an environment that sets these keeps its own.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
