"""NumPy's BLAS runs one thread per caller in every ser-live process (see streamer/__init__.py)."""

import os
import subprocess
import sys

from tests.conftest import ROOT

# prints the thread counts of the process's BLAS pools
BLAS_THREADS = ("import threadpoolctl; "
                "print(sorted({p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'}))")


def test_importing_streamer_first_gives_numpy_one_blas_thread():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    code = f"import streamer, numpy; {BLAS_THREADS}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == "[1]", out
    env["OPENBLAS_NUM_THREADS"] = "2"  # an environment that sets it keeps its own
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == "[2]", out


def test_numpy_imported_first_still_gets_one_blas_thread_and_the_same_log_mel():
    """Where NumPy came first (pytest, a Ray worker, a user's program), its BLAS pool had already
    started; streamer sets it to one thread, and the log-mel's bits do not depend on which came first
    (they did on an AVX2 CPU: a Ray replica answered ~0.004 apart from the calling process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")}
    mel = ("import hashlib; from faster_whisper.feature_extractor import FeatureExtractor; "
           "from streamer.audio.io import load_audio; "
           "x = load_audio('demo/demo.flac')[16000:56000]; "
           "print(hashlib.md5(FeatureExtractor()(x, padding=160).tobytes()).hexdigest())")
    outs = []
    for first in ("import numpy, streamer", "import streamer, numpy"):
        for omp in ("1", "2"):  # what a Ray worker has, and what a 2-core machine's default gives
            out = subprocess.run([sys.executable, "-c", f"{first}; {BLAS_THREADS}; {mel}"], capture_output=True, text=True,
                                 env={**env, "OMP_NUM_THREADS": omp}, check=True, cwd=ROOT).stdout.split()
            assert out[0] == "[1]", (first, omp, out)
            outs.append(out[1])
    assert len(set(outs)) == 1, outs
