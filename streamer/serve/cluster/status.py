"""The replicas that really run, from Ray Serve's status: waited for at start
(:func:`wait_running`) and watched while ser-serve runs (:class:`ReplicaMonitor`, which says
each change in one line: a killed replica, its replacement, a scale-up or -down).

``serve.run`` returns once one replica of each deployment runs, so the count asked for is not
the count running; these read ``serve.status()`` instead. The controller notices a killed
replica only at its next health check, and may have a replacement running before the next
reading, so the monitor reads the replica actors alive too (Ray's named actors, which go the
moment a process dies): a replica the controller still calls running but whose actor is gone
counts as ``DEAD`` (:func:`with_dead`), and a replica that went between two readings is named
(:meth:`ReplicaMonitor.check`) even when the count is back.

>>> class D: replica_states = {"RUNNING": 1, "STARTING": 1}
>>> class A: deployments = {"CallGateway": D()}
>>> class S: applications = {"ser-gateway": A()}
>>> states_of(S(), "ser-gateway", "CallGateway"), states_of(S(), "other", "CallGateway")
({'RUNNING': 1, 'STARTING': 1}, {})
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

from streamer.core.errors import SerError
from streamer.serve.cluster.background import Background
from streamer.serve.cluster.capacity import ReplicaWait, running_line

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (application, deployment)
Read = Callable[[Key], dict[str, int]]


def states_of(status, app: str, deployment: str) -> dict[str, int]:
    """A deployment's replicas by state in a ``serve.status()`` answer ({} when it has none)."""
    a = getattr(status, "applications", {}).get(app)
    d = a.deployments.get(deployment) if a is not None else None
    if d is None:
        return {}
    return {str(getattr(k, "value", k)): int(n) for k, n in dict(d.replica_states).items() if n}


def failure_of(status, app: str) -> str | None:
    """The message of an application whose deployment failed (a replica's constructor raised).

    >>> class A: status, message = "DEPLOY_FAILED", "boom"
    >>> class S: applications = {"x": A()}
    >>> failure_of(S(), "x"), failure_of(S(), "y")
    ('boom', None)
    """
    a = getattr(status, "applications", {}).get(app)
    if a is None or str(getattr(a.status, "value", a.status)) != "DEPLOY_FAILED":
        return None
    return str(a.message or "deploy failed")


def with_dead(states: dict[str, int], alive: frozenset[str] | None) -> dict[str, int]:
    """``states`` with the replicas whose actors are gone (more replicas in the controller's
    states than actors alive) moved from ``RUNNING`` to ``DEAD``; as they were when ``alive`` is
    unknown (None).

    >>> with_dead({"RUNNING": 1}, frozenset())
    {'DEAD': 1}
    >>> with_dead({"RUNNING": 2, "STOPPING": 1}, frozenset({"a", "b"}))
    {'RUNNING': 1, 'STOPPING': 1, 'DEAD': 1}
    >>> with_dead({"RUNNING": 1, "STARTING": 1}, frozenset({"a", "b"})), with_dead({"RUNNING": 1}, None)
    ({'RUNNING': 1, 'STARTING': 1}, {'RUNNING': 1})
    """
    if alive is None:
        return states
    dead = min(max(0, sum(states.values()) - len(alive)), states.get("RUNNING", 0))
    if not dead:
        return states
    out = {k: n - dead if k == "RUNNING" else n for k, n in states.items()}
    out["DEAD"] = dead
    return {k: n for k, n in out.items() if n}


def replicas_alive(key: Key) -> frozenset[str] | None:
    """The ids of a deployment's replica actors alive now (Ray names each
    ``SERVE_REPLICA::app#deployment#id``); None when Ray cannot say."""
    import ray

    prefix = f"SERVE_REPLICA::{key[0]}#{key[1]}#"
    if not ray.is_initialized():  # asking would start a local cluster
        return None
    try:
        named = ray.util.list_named_actors(all_namespaces=True)
    except Exception as exc:  # an old Ray or a busy GCS: the controller's states alone
        log.debug("listing the replica actors: %s", exc)
        return None
    return frozenset(n["name"][len(prefix):] for n in named if str(n.get("name", "")).startswith(prefix))


def read_states(key: Key) -> dict[str, int]:
    """One deployment's replica states, asked of Ray Serve's controller; SerError when its
    application failed to deploy."""
    from ray import serve

    status = serve.status()
    failed = failure_of(status, key[0])
    if failed:
        raise SerError(f"the Ray Serve application {key[0]!r} failed to deploy: {failed}")
    return states_of(status, *key)


def wait_running(wants: dict[Key, int], timeout_s: float, read: Read = read_states,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 every_s: float = 0.5) -> tuple[bool, dict[Key, dict[str, int]]]:
    """Wait until each deployment runs at least its wanted replicas, or ``timeout_s``.
    (every one up, the last states read). Bounded: at most ``timeout_s / every_s + 2`` rounds.
    A deployment that failed (``read`` raises SerError) ends the wait with that error.

    >>> seen = iter([{"RUNNING": 1, "STARTING": 1}, {"RUNNING": 2}])
    >>> t = [0.0]
    >>> wait_running({("a", "d"): 2}, 10.0, read=lambda k: next(seen), clock=lambda: t[0],
    ...              sleep=lambda s: t.__setitem__(0, t[0] + s))
    (True, {('a', 'd'): {'RUNNING': 2}})
    >>> wait_running({("a", "d"): 2}, 1.0, read=lambda k: {"STARTING": 2}, clock=lambda: t[0],
    ...              sleep=lambda s: t.__setitem__(0, t[0] + s))[0]
    False
    """
    start = clock()
    waits = {k: ReplicaWait(want=n, deadline=start + timeout_s) for k, n in wants.items()}
    last: dict[Key, dict[str, int]] = {}
    for _ in range(int(timeout_s / every_s) + 2):
        now = clock()
        steps = {}
        for k, w in waits.items():
            try:
                last[k] = read(k)
            except SerError:  # the deployment failed: no use waiting
                raise
            except Exception as exc:  # the controller busy or restarting: read again next round
                log.warning("reading %s/%s's replicas: %s", k[0], k[1], exc)
            steps[k] = w.step(now, last.get(k, {}))
        if all(s == "up" for s in steps.values()):
            return True, last
        if any(s == "timeout" for s in steps.values()):
            return False, last
        sleep(every_s)
    return False, last


class ReplicaMonitor(Background):
    """A thread that reads one deployment's replica states every ``every_s`` and says (through
    ``say``) each change of the running count, with the other states, in one line, naming the
    replicas that went since the last reading (``alive``: their ids; None when unknown).
    ``asked`` (the configured count; None with autoscaling) may be changed while it runs."""

    thread_name = "ser-serve replica monitor"

    def __init__(self, key: Key, say: Callable[[str], None], asked: int | None, every_s: float = 2.0,
                 read: Read = read_states, running: int | None = None,
                 alive: Callable[[Key], frozenset[str] | None] = replicas_alive) -> None:
        super().__init__()
        self.key, self.say, self.asked, self.every_s, self.read, self.alive = key, say, asked, every_s, read, alive
        self.counters: collections.Counter = collections.Counter()
        self._last = running  # the running count last said
        self._ids: frozenset[str] | None = None  # the replica actors alive at the last reading

    @property
    def running(self) -> int | None:
        """The running count last read (None before the first)."""
        return self._last

    def check(self) -> str | None:
        """One reading: the line to say when the running count changed or a replica went (None
        otherwise).

        >>> m = ReplicaMonitor(("a", "CallGateway"), print, 2, running=2, read=lambda k: {"RUNNING": 1, "STARTING": 1},
        ...                    alive=lambda k: None)
        >>> m.check()
        '1 of 2 CallGateway replica(s) running (1 starting)'
        >>> m.check() is None
        True
        """
        self.counters["reads"] += 1
        try:
            ids = self.alive(self.key)  # first: one that dies before the controller is read counts as running
            states = with_dead(self.read(self.key), ids)
        except Exception as exc:  # the controller busy: the next round reads again
            self.counters["read_errors"] += 1
            log.debug("reading replicas: %s", exc)
            return None
        gone = sorted(self._ids - ids) if self._ids is not None and ids is not None else []
        self._ids = ids if ids is not None else self._ids
        running = int(states.get("RUNNING", 0))
        if running == self._last and not gone:
            return None
        self._last = running
        self.counters["changes"] += 1
        line = running_line(self.key[1], states, self.asked)
        return f"{self.key[1]} replica {', '.join(gone)} gone; {line}" if gone else line

    def run_thread(self) -> None:
        while not self.stopping(self.every_s):
            line = self.check()
            if line:
                self.say(line)
