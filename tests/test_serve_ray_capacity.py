"""Honest replicas and the driver's lost-call watch (issue 28 item 0), without a Ray cluster:

- the shipped ``[ray]`` shares fit the README's 2-core example of two gateways; a plan that
  does not fit is said in one line naming the resource and what to set, and the replicas
  that can run are the ones waited for;
- the count reported is the count running (Ray Serve's replica states), waited for with a
  fake clock, and each later change is said once;
- the driver's watch (``LostCallWatch``, against a real redis-server on 127.0.0.1) announces
  ``call_lost`` for the calls of a replica that died when no gateway is left to watch.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from streamer.runtime.config import Config, RayConfig
from streamer.serve.cluster.capacity import (ceiling_line, expected, gateways_that_fit, plan_of, running_line,
                                             shortfall)
from streamer.serve.cluster.status import ReplicaMonitor, wait_running
from tests.redis_util import redis_server  # noqa: F401  (fixture)


def ray(**kw) -> RayConfig:
    kw.setdefault("max_gateways", max(1, kw.get("gateways", 1)))
    return RayConfig(**kw)


def test_the_shipped_shares_fit_two_gateways_on_two_cores():
    shipped = Config.load().ray  # config.toml
    plan = plan_of(ray(gateways=2, gateway_cpus=shipped.gateway_cpus, model_cpus=shipped.model_cpus), local=True)
    assert plan.cpus <= 2.0
    assert shortfall(plan, cpus=2.0) is None
    assert expected(plan, cpus=2.0) == {"audio": 1, "text": 1, "whisper": 1, "CallGateway": 2}
    assert gateways_that_fit(plan, cpus=2.0) >= 2


def test_what_issue_28_saw_is_said_in_one_line():
    """0.5 CPU each: 2.5 CPUs of 2, the second gateway never runs; the line says so and what to set."""
    plan = plan_of(ray(gateways=2, gateway_cpus=0.5, model_cpus=0.5), local=True)
    line = shortfall(plan, cpus=2.0)
    assert line is not None and "\n" not in line
    for part in ("Ray CPUs", "2.5", "[ray] gateway_cpus = 0.25", "model_cpus = 0.33", "num_cpus = 3"):
        assert part in line, line
    assert expected(plan, cpus=2.0)["CallGateway"] == 1
    # each suggestion fits
    for fixed in (ray(gateways=2, gateway_cpus=0.25, model_cpus=0.5), ray(gateways=2, gateway_cpus=0.5, model_cpus=0.33)):
        assert shortfall(plan_of(fixed, local=True), cpus=2.0) is None
    assert shortfall(plan, cpus=3.0) is None


def test_joined_cluster_gpus_and_models_in_the_gateways():
    far = shortfall(plan_of(ray(gateways=4, gateway_cpus=1.0), local=False), cpus=2.0)
    assert "add nodes" in far and "num_cpus" not in far  # num_cpus sizes a local cluster only
    gpu = shortfall(plan_of(ray(whisper_gpus=1.0), local=False), cpus=8.0, gpus=0.0)
    assert "GPU" in gpu and "whisper_gpus = 0" in gpu
    local_models = plan_of(ray(models="local", gateways=2, gateway_cpus=1.0), local=True)
    assert local_models.models == () and shortfall(local_models, cpus=2.0) is None
    assert expected(plan_of(ray(whisper=False), local=True), cpus=2.0) == {"audio": 1, "text": 1, "CallGateway": 1}


def test_autoscaling_ceiling():
    assert ceiling_line(plan_of(ray(gateways=2, max_gateways=5), local=True), cpus=2.0) is None
    line = ceiling_line(plan_of(ray(gateways=2, max_gateways=12), local=True), cpus=2.0)
    assert line.startswith("autoscaling stops at 5 gateways of [ray] max_gateways 12") and "gateway_cpus = 0.1" in line


def test_waiting_for_the_replicas_with_a_fake_clock():
    t = [0.0]
    readings = iter([{"STARTING": 2}, {"RUNNING": 1, "STARTING": 1}, {"RUNNING": 2}])
    up, states = wait_running({("ser-gateway", "CallGateway"): 2}, 60.0, read=lambda k: next(readings),
                              clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert up and states[("ser-gateway", "CallGateway")] == {"RUNNING": 2} and t[0] == 1.0
    # one never comes: bounded by the timeout, in rounds of the fake clock
    reads = []
    up, states = wait_running({("a", "d"): 2}, 5.0, read=lambda k: reads.append(k) or {"RUNNING": 1, "STARTING": 1},
                              clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert not up and len(reads) == 11
    assert running_line("CallGateway", states[("a", "d")], 2) == "1 of 2 CallGateway replica(s) running (1 starting)"
    # the controller failing a read is read again, not an error
    seq = iter([RuntimeError("controller busy"), {"RUNNING": 1}])

    def flaky(_):
        x = next(seq)
        if isinstance(x, Exception):
            raise x
        return x

    assert wait_running({("a", "d"): 1}, 5.0, read=flaky, clock=lambda: t[0],
                        sleep=lambda s: t.__setitem__(0, t[0] + s))[0]


def test_the_monitor_says_each_change_once():
    said = []
    seq = iter([{"RUNNING": 2}, {"RUNNING": 1, "STARTING": 1}, {"RUNNING": 1, "STARTING": 1}, {"RUNNING": 2}])
    m = ReplicaMonitor(("ser-gateway", "CallGateway"), said.append, 2, running=2, read=lambda k: next(seq))
    for _ in range(4):
        line = m.check()
        if line:
            said.append(line)
    assert said == ["1 of 2 CallGateway replica(s) running (1 starting)", "2 of 2 CallGateway replica(s) running"]
    assert m.counters["reads"] == 4 and m.counters["changes"] == 2 and m.running == 2


def test_the_monitor_names_a_replica_replaced_between_two_readings():
    """Killed and replaced within one period (the controller's health check is quicker than the
    monitor's reading): the count never changes, yet the line names the replica that went; a
    replica the controller still counts running whose actor is gone is counted dead, and its
    replacement starting is no change of the running count."""
    said = []
    readings = iter([({"RUNNING": 1}, {"a"}), ({"RUNNING": 1}, {"b"}), ({"RUNNING": 1}, {"b"}),
                     ({"RUNNING": 1}, set()), ({"STARTING": 1}, {"c"}), ({"RUNNING": 1}, {"c"})])
    now = {}

    def alive(key):  # read first by the monitor: the fake cluster's next state
        now["states"], ids = next(readings)
        return frozenset(ids)

    m = ReplicaMonitor(("ser-gateway", "CallGateway"), said.append, 1, running=1, alive=alive,
                       read=lambda k: now["states"])
    for _ in range(6):
        line = m.check()
        if line:
            said.append(line)
    assert said == ["CallGateway replica a gone; 1 of 1 CallGateway replica(s) running",
                    "CallGateway replica b gone; 0 of 1 CallGateway replica(s) running (1 dead)",
                    "1 of 1 CallGateway replica(s) running"]


def test_the_driver_watch_announces_a_dead_replicas_calls(redis_server):  # noqa: F811
    """The only gateway holding calls dies (its bus stops with no call_end, its heartbeats
    lapse) and no gateway is left: the driver's watch announces each call lost once."""
    from streamer.serve.bus import BusOptions, RedisBus
    from streamer.serve.cluster.watch import LostCallWatch, WatchOptions

    fast = dict(ttl_s=1.0, beat_s=0.25)
    ids = ["ONLY-1", "ONLY-2"]

    async def gateway_dies() -> float:
        gw = RedisBus(BusOptions(url=redis_server.url, desk="only", replica="gw-doomed", watch_s=0.2, **fast))
        await gw.start()
        for cid in ids:
            await gw.open_call(cid, "twilio", ["customer"])
            gw.publish({"type": "call_start", "call_id": cid, "track": None})
        await gw.beat()
        assert await gw.flush(5.0)
        await gw.kill()  # as a SIGKILLed replica: no flush, no call_end, its own watcher gone too
        return time.monotonic()

    def read_lost(t0: float) -> tuple[dict, list, dict]:
        """The desk's stream and the calls' hashes, read with redis-py itself (the bus's keys)."""
        import json

        import redis

        keys = BusOptions(url=redis_server.url, desk="only")
        r = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=2.0)
        lost, seen, last = {}, [], "-"
        try:
            for _ in range(150):  # at most 150 reads, 0.1 s apart
                if len(lost) == len(ids) or time.monotonic() - t0 > 15:
                    break
                for entry_id, fields in r.xrange(keys.stream, min=last):
                    if entry_id == last:
                        continue
                    last = entry_id
                    ev = json.loads(fields["json"])
                    seen.append(ev)
                    if ev["type"] == "call_lost":
                        lost.setdefault(ev["call_id"], time.monotonic() - t0)
                time.sleep(0.1)
            time.sleep(1.0)  # the watch keeps looking: no second announcement
            seen = [json.loads(f["json"]) for _, f in r.xrange(keys.stream)]
            states = {c: r.hget(keys.call_key(c), "state") for c in ids}
        finally:
            r.close()
        return lost, seen, states

    watch = LostCallWatch(WatchOptions(url=redis_server.url, desk="only", every_s=0.2, **fast)).start()
    try:
        t0 = asyncio.run(gateway_dies())
        lost, seen, states = read_lost(t0)
    finally:
        assert watch.stop(5.0)
    assert set(lost) == set(ids), [(e["type"], e.get("call_id")) for e in seen]
    assert sorted(e["call_id"] for e in seen if e["type"] == "call_lost") == sorted(ids)
    assert states == {c: "lost" for c in ids}
    assert watch.counters["lost"] == len(ids) and watch.counters["errors"] == 0
    assert max(lost.values()) < 15.0  # the product's promise, not a speed figure
    print(f"call_lost after the gateway died, no gateway left: {max(lost.values()):.2f} s (ttl 1 s, watch 0.2 s)")


def test_the_watch_survives_redis_away():
    """No Redis: the rounds fail (counted, logged once), the thread keeps going and stops when asked."""
    from streamer.serve.cluster.watch import LostCallWatch, WatchOptions
    from tests.redis_util import free_port

    watch = LostCallWatch(WatchOptions(url=f"redis://127.0.0.1:{free_port()}", every_s=0.1)).start()
    for _ in range(50):  # 5 s at most
        if watch.counters["errors"] >= 2:
            break
        time.sleep(0.1)
    assert watch.stop(10.0)
    assert watch.counters["errors"] >= 2 and watch.counters["lost"] == 0


def test_watch_options_refuse_a_non_redis_url():
    from streamer.serve.cluster.watch import WatchOptions

    with pytest.raises(ValueError):
        WatchOptions(url="http://127.0.0.1:6379")
