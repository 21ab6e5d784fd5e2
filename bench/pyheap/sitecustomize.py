"""Python-heap snapshots of a ser-serve process started by bench/soak.py: put this folder on
``PYTHONPATH`` (``PYTHONPATH=bench/pyheap``). In the server only (its command line names
``streamer.cli.serve``) it starts ``tracemalloc`` (one frame) and writes the 40 largest lines at each
mark of ``SER_TM_AT`` (seconds after start, comma-separated; default 480,1440) to
``$SER_TM_OUT/snapK.txt``, with the growth since the first. Used for bench/README.md, 2026-12-07."""

import os, threading, time
try:
    _cmd = open("/proc/self/cmdline", "rb").read().replace(b"\0", b" ").decode()
except OSError:
    _cmd = ""
if "streamer.cli.serve" in _cmd:
    import tracemalloc
    tracemalloc.start(1)

    def _dump():
        out = os.environ.get("SER_TM_OUT", "/tmp/tm")
        os.makedirs(out, exist_ok=True)
        marks = [float(x) for x in os.environ.get("SER_TM_AT", "480,1440").split(",")]
        t0 = time.monotonic()
        first = None
        for k, at in enumerate(marks):
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            snap = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
            total = sum(s.size for s in snap.statistics("filename"))
            with open(f"{out}/snap{k}.txt", "w") as f:
                f.write(f"at {at} s: traced {total/1e6:.1f} MB, rss {int(open('/proc/self/statm').read().split()[1])*4096/1e6:.0f} MB\n")
                for s in snap.statistics("lineno")[:40]:
                    f.write(f"{s}\n")
                if first is not None:
                    f.write("\n== growth since the first snapshot\n")
                    for s in snap.compare_to(first, "lineno")[:40]:
                        f.write(f"{s}\n")
            first = first or snap

    threading.Thread(target=_dump, daemon=True, name="tm-dump").start()
