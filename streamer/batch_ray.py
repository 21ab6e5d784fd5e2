"""``ser-analyze --engine ray``: the batch of :mod:`streamer.batch` spread over a Ray cluster's CPUs.

One Ray task per file (``num_cpus=1``), so a cluster runs as many files at once as it has
CPUs. Each Ray worker process loads the models once, on its first file, and keeps them
(keyed by the settings) for the files after it, as ``--jobs N``'s worker processes do.

A file's log is never half-written, whatever dies and when:

- the worker runs :func:`streamer.batch.analyse_file` into its own scratch folder and
  returns the finished log's bytes;
- the driver (the ``ser-analyze`` process) is the only writer of the output folder: it
  writes the bytes to ``<log>.partial`` and renames that onto ``<log>``, as ``analyse_file``
  does for ``--jobs N``;
- a worker lost mid-file (its process or node dies) returns nothing: Ray runs the file
  again on another worker, up to ``max_retries`` times; after that the file is reported
  failed with no log, so the next run (which skips complete logs) redoes it.

So the logs, ``summary.csv`` (built from the logs) and resuming are those of ``--jobs N``.
Only the input files must be readable at the same path on every node (a shared folder);
the output folder lives where ``ser-analyze`` runs. Relative input paths are read from the
driver's working directory, so the logs name them as ``--jobs N`` does.

``run_batch_ray`` keeps :func:`streamer.batch.run_batch`'s contract: it yields
``(path, error)`` as each file finishes (``error`` is None when it went well).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamer.batch import BatchOptions
from streamer.core.errors import SerError

log = logging.getLogger(__name__)

# Environment passed on to the workers: on a cluster joined by address they do not inherit
# the driver's environment (model folders, offline Hugging Face, the test hook below).
_FORWARD_PREFIXES = ("SER_", "HF_", "TRANSFORMERS_", "ONEDNN_")
_FORWARD_NAMES = ("TOKENIZERS_PARALLELISM",)
# Test hook: when set to a path, the first worker to write a window record claims that path
# (created exclusively) and its process exits on the spot, mid-file, as a lost node would.
DIE_ONCE_ENV = "SER_BATCH_RAY_DIE_ONCE"


@dataclass(frozen=True)
class RayOptions:
    """Where and how to run: ``address`` None joins ``$RAY_ADDRESS`` when set, else starts a
    local cluster of ``num_cpus`` CPUs (None: all of them) for the batch (Ray listens on the
    node's address, not only 127.0.0.1: it maps a loopback ``node_ip_address`` to it; token
    authentication, on by default since Ray 2.5x, guards it)."""

    address: str | None = None
    num_cpus: int | None = None
    max_retries: int = 3  # runs of a file after the first when its worker is lost

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise SerError("max_retries must be 0 or more")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise SerError("num_cpus must be at least 1")


def _forwarded_env() -> dict[str, str]:
    """
    >>> os.environ["SER_X_DOCTEST"] = "1"; got = _forwarded_env(); del os.environ["SER_X_DOCTEST"]
    >>> got["SER_X_DOCTEST"], "PATH" in got
    ('1', False)
    """
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_PREFIXES) or k in _FORWARD_NAMES}


def write_log_atomically(data: bytes, log_path: Path) -> None:
    """``data`` onto ``log_path`` through ``<log>.partial`` and a rename, private (0600), synced:
    a reader sees the old log or the whole new one, never part of it.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); write_log_atomically(b'{"a":1}\\n', d / "x.ndjson")
    >>> (d / "x.ndjson").read_bytes(), (d / "x.partial").exists(), oct((d / "x.ndjson").stat().st_mode & 0o777)
    (b'{"a":1}\\n', False, '0o600')
    """
    tmp = log_path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(log_path)


# --- in the worker processes ----------------------------------------------------------------
_cache: dict = {}  # per Ray worker process: the settings' key and the models loaded for them


def _load(config_path: str | None, overrides: dict) -> None:
    """Load the models once per worker process and settings (as ``--jobs N``'s worker initializer, ``batch.init_worker``)."""
    from streamer import batch

    key = json.dumps([config_path, overrides], sort_keys=True)
    if _cache.get("key") != key:
        _cache.clear()
        batch.init_worker(config_path, overrides)
        _cache.update(key=key, loads=_cache.get("loads", 0) + 1)


def _dying_log(marker: str):
    """The test hook: a session log whose next window record, the first in the cluster to claim
    ``marker``, ends this process right after it is written (a half-written scratch log)."""
    from streamer.live.session_log import SessionLog

    class Dying(SessionLog):
        def write(self, record: dict) -> None:
            super().write(record)
            if record.get("type") == "window":
                try:
                    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    return
                os.write(fd, json.dumps({"pid": os.getpid(), "log": str(self.path), "records": self.records}).encode())
                os.close(fd)
                os._exit(1)

    return Dying


def _analyse_remote(task: tuple[str, str, BatchOptions], config_path: str | None, overrides: dict,
                    cwd: str) -> tuple[str, str | None, bytes | None]:
    """One file in a worker: (path, error, the finished log's bytes or None when there is none).
    A failure to load the models comes back as ("", message, None)."""
    from streamer import batch

    path, log_path, opts = task
    here = os.getcwd()
    scratch = Path(tempfile.mkdtemp(prefix="ser-analyze-"))
    try:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths (files, --config) as the driver gave them; the log names the file so
        try:
            _load(config_path, overrides)
        except Exception as exc:
            log.exception("loading the models failed")
            return "", f"cannot load the models on a Ray worker: {exc}", None
        marker = os.environ.get(DIE_ONCE_ENV)
        if marker and not _cache.get("armed") and not os.path.exists(marker):
            _cache["log_factory"] = _dying_log(marker)
            _cache["armed"] = True
        target = scratch / Path(log_path).name
        try:
            error = batch.analyse_file(Path(path), target, *batch.worker_models(), opts,
                                       **({"log_factory": _cache["log_factory"]} if "log_factory" in _cache else {}))
        except Exception as exc:  # one bad file never ends the batch (as batch._work)
            log.exception("analysis of %s failed", path)
            return path, str(exc), (target.read_bytes() if target.is_file() else None)
        return path, error, target.read_bytes()
    finally:
        os.chdir(here)
        shutil.rmtree(scratch, ignore_errors=True)


# --- in the driver ------------------------------------------------------------------------------
def _connect(opts: RayOptions) -> bool:
    """Join or start a cluster; True when this call started the connection (and ends it)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise SerError('--engine ray needs Ray: pip install "ray[serve]"') from exc
    if ray.is_initialized():
        return False
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except Exception as exc:
        if not address:
            raise SerError(f"cannot start a local Ray cluster ({exc}); `ray status` shows what runs") from exc
        auth = ("" if os.environ.get("RAY_AUTH_MODE") else
                "; a cluster with token authentication (Ray's default) is joined at an explicit address only with "
                "RAY_AUTH_MODE=token set (its token in ~/.ray/auth_token or $RAY_AUTH_TOKEN), or use --address auto on its head node")
        raise SerError(f"cannot join the Ray cluster at {address} ({exc}); check --address / $RAY_ADDRESS "
                       f"(`ray start --head` prints it){auth}, or leave both unset for a local cluster") from exc
    return True


def run_batch_ray(tasks: list[tuple[str, str, BatchOptions]], config_path: str | None, overrides: dict,
                  opts: RayOptions = RayOptions()) -> Iterator[tuple[str, str | None]]:
    """Analyse ``tasks`` ((file, log path, BatchOptions) as for ``run_batch``) on a Ray
    cluster; yields (path, error) as each file finishes, and writes each finished log."""
    if not tasks:
        return
    started = _connect(opts)
    import ray

    try:
        remote = ray.remote(_analyse_remote).options(
            num_cpus=1, max_retries=opts.max_retries, retry_exceptions=False,
            runtime_env={"env_vars": _forwarded_env()}, name="ser-analyze-file")
        cwd = os.getcwd()
        pending = {remote.remote(t, config_path, overrides, cwd): t for t in tasks}
        log.info("%d file(s) on a Ray cluster of %s CPU(s)", len(tasks), ray.cluster_resources().get("CPU"))
        ready: list = []
        while pending:
            if not ready:  # one wait collects every result that is ready
                first, rest = ray.wait(list(pending), num_returns=1)
                ready = first + (ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else [])
            ref = ready.pop(0)
            path, log_path, _ = pending.pop(ref)
            try:
                got_path, error, data = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # raised outside analyse_file (ser-live missing on a node?)
                cause = str(exc.cause or exc).strip().splitlines()
                yield path, f"failed on a Ray worker: {cause[-1] if cause else type(exc).__name__}"
                continue
            except ray.exceptions.RayError as exc:  # the worker (or its node) was lost, retries spent
                log.warning("file %s lost on the Ray cluster: %s", path, exc)
                yield path, (f"the Ray worker analysing it was lost {opts.max_retries + 1} time(s) "
                             f"({type(exc).__name__}); no log was written, run ser-analyze again to redo it")
                continue
            if not got_path:  # the models did not load: no file can succeed
                for r in pending:
                    ray.cancel(r, force=True)
                raise SerError(error or "cannot load the models on a Ray worker")
            if data is not None:
                write_log_atomically(data, Path(log_path))
            yield path, error
    finally:
        if started:
            ray.shutdown()
