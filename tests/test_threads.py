"""NumPy's BLAS runs one thread per caller in every ser-live process (see streamer/__init__.py)."""

import os
import subprocess
import sys


def test_importing_streamer_first_gives_numpy_one_blas_thread():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    code = ("import streamer, numpy, threadpoolctl; "
            "print(sorted({p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == "[1]", out
    env["OPENBLAS_NUM_THREADS"] = "2"  # an environment that sets it keeps its own
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == "[2]", out
