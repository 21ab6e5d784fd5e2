"""What ``ser-serve --engine ray`` asks of the cluster, whether it fits, and how many replicas
are really running. Pure: the driver hands in the ``[ray]`` settings, the cluster's free CPUs
and GPUs, and Ray Serve's replica states; nothing here talks to Ray.

Ray places a replica only where its ``num_cpus`` (and ``num_gpus``) are free, and
``serve.run`` returns once one replica of each deployment runs: a second gateway that does
not fit waits for ever while the application says it is running. So the driver checks the
plan first (:func:`shortfall`: one line naming the short resource and what to set), waits for
the replicas that fit (:func:`expected`, :class:`ReplicaWait`), and reports the count running
(:func:`running_line`), not the count asked for.

>>> p = plan_of(_ray(gateways=2, gateway_cpus=0.5, model_cpus=0.5), local=True)
>>> p.cpus
2.5
>>> print(shortfall(p, cpus=2.0))
not every replica fits: 3 model replicas x [ray] model_cpus 0.5 and 2 gateways x [ray] gateway_cpus 0.5 ask 2.5 Ray CPUs, the cluster has 2 free; set [ray] gateway_cpus = 0.25 or model_cpus = 0.33, or num_cpus = 3
>>> expected(p, cpus=2.0)["CallGateway"]
1
>>> shortfall(plan_of(_ray(gateways=2), local=True), cpus=2.0) is None  # the defaults fit 2 cores
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GATEWAY = "CallGateway"
_EPS = 1e-9


@dataclass(frozen=True)
class Ask:
    """One deployment's replicas and what each asks for."""

    name: str  # audio, text, whisper, CallGateway
    replicas: int
    cpus: float
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.replicas < 0 or self.cpus < 0 or self.gpus < 0:
            raise ValueError(f"{self.name}: replicas, cpus and gpus must be 0 or more")

    @property
    def total_cpus(self) -> float:
        return self.replicas * self.cpus

    @property
    def total_gpus(self) -> float:
        return self.replicas * self.gpus


@dataclass(frozen=True)
class Plan:
    """The model deployments (placed first) and the gateways, at start and at most."""

    models: tuple[Ask, ...]
    gateways: Ask
    max_gateways: int
    local: bool  # a cluster this run starts: ``[ray] num_cpus`` sets its size

    def __post_init__(self) -> None:
        if self.max_gateways < self.gateways.replicas:
            raise ValueError("max_gateways must be at least the gateways at start")

    @property
    def model_cpus(self) -> float:
        return sum(a.total_cpus for a in self.models)

    @property
    def model_replicas(self) -> int:
        return sum(a.replicas for a in self.models)

    @property
    def cpus(self) -> float:
        return self.model_cpus + self.gateways.total_cpus

    @property
    def gpus(self) -> float:
        return sum(a.total_gpus for a in self.models) + self.gateways.total_gpus


def plan_of(ray, local: bool) -> Plan:
    """The plan of a ``[ray]`` section (:class:`streamer.runtime.config.RayConfig`)."""
    models: tuple[Ask, ...] = ()
    if ray.models == "deployments":
        models = (Ask("audio", ray.model_replicas, ray.model_cpus), Ask("text", ray.model_replicas, ray.model_cpus))
        if ray.whisper:
            models += (Ask("whisper", ray.whisper_replicas, ray.model_cpus, ray.whisper_gpus),)
    return Plan(models, Ask(GATEWAY, ray.gateways, ray.gateway_cpus), ray.max_gateways, local)


def _down(x: float) -> float:
    """Rounded down to a hundredth (a share that still fits).

    >>> _down(0.3333), _down(0.25), _down(0.999999999999)
    (0.33, 0.25, 1.0)
    """
    return math.floor(x * 100 + 1e-6) / 100


def _num(x: float) -> str:
    return f"{x:g}"


def shortfall(plan: Plan, cpus: float, gpus: float = 0.0) -> str | None:
    """One line when the replicas at start do not fit ``cpus`` / ``gpus`` (the cluster's free
    ones): which resource is short, who asks for it, and what to set. None when they fit.

    >>> p = plan_of(_ray(whisper_gpus=1.0), local=False)
    >>> print(shortfall(p, cpus=8.0, gpus=0.0))
    not every replica fits: 1 Whisper replica(s) x [ray] whisper_gpus 1 ask 1 GPU(s), the cluster has 0 free; set [ray] whisper_gpus = 0 (Whisper on CPUs), or add a GPU node
    >>> print(shortfall(plan_of(_ray(gateways=4), local=False), cpus=1.0))
    not every replica fits: 3 model replicas x [ray] model_cpus 0.25 and 4 gateways x [ray] gateway_cpus 0.25 ask 1.75 Ray CPUs, the cluster has 1 free; set [ray] gateway_cpus = 0.06, or add nodes
    """
    if plan.gpus > gpus + _EPS:
        whisper = next((a for a in plan.models if a.name == "whisper"), None)
        who = (f"{whisper.replicas} Whisper replica(s) x [ray] whisper_gpus {_num(whisper.gpus)}" if whisper
               else "the deployments")
        return (f"not every replica fits: {who} ask {_num(plan.gpus)} GPU(s), the cluster has {_num(gpus)} free; "
                "set [ray] whisper_gpus = 0 (Whisper on CPUs), or add a GPU node")
    if plan.cpus <= cpus + _EPS:
        return None
    g = plan.gateways
    parts = []
    if plan.models:
        parts.append(f"{plan.model_replicas} model replicas x [ray] model_cpus {_num(plan.models[0].cpus)}")
    parts.append(f"{g.replicas} gateways x [ray] gateway_cpus {_num(g.cpus)}")
    fixes = []
    if g.replicas and _down((cpus - plan.model_cpus) / g.replicas) > 0:
        fixes.append(f"gateway_cpus = {_num(_down((cpus - plan.model_cpus) / g.replicas))}")
    if plan.model_replicas and _down((cpus - g.total_cpus) / plan.model_replicas) > 0:
        fixes.append(f"model_cpus = {_num(_down((cpus - g.total_cpus) / plan.model_replicas))}")
    grow = f"num_cpus = {math.ceil(plan.cpus - _EPS)}" if plan.local else "add nodes"
    fix = f"set [ray] {' or '.join(fixes)}, or {grow}" if fixes else (
        f"set [ray] {grow}" if plan.local else "add nodes")
    return (f"not every replica fits: {' and '.join(parts)} ask {_num(plan.cpus)} Ray CPUs, the cluster has "
            f"{_num(cpus)} free; {fix}")


def gateways_that_fit(plan: Plan, cpus: float, gpus: float = 0.0) -> int:
    """Gateway replicas the CPUs left by the models can hold (models placed first).

    >>> gateways_that_fit(plan_of(_ray(gateways=1, max_gateways=8), local=True), cpus=2.0)
    5
    """
    g = plan.gateways
    left_cpus = cpus - plan.model_cpus
    left_gpus = gpus - sum(a.total_gpus for a in plan.models)
    if left_cpus < -_EPS or left_gpus < -_EPS:
        return 0
    n = math.floor(left_cpus / g.cpus + _EPS) if g.cpus > 0 else plan.max_gateways
    if g.gpus > 0:
        n = min(n, math.floor(left_gpus / g.gpus + _EPS))
    return max(0, n)


def ceiling_line(plan: Plan, cpus: float, gpus: float = 0.0) -> str | None:
    """One line when autoscaling's ``max_gateways`` cannot all be placed (None when they can).

    >>> print(ceiling_line(plan_of(_ray(gateways=1, max_gateways=8), local=True), cpus=2.0))
    autoscaling stops at 5 gateways of [ray] max_gateways 8: the cluster's 2 free Ray CPUs hold the models' 0.75 and 5 x [ray] gateway_cpus 0.25; set [ray] gateway_cpus = 0.15, or num_cpus = 3
    """
    n = gateways_that_fit(plan, cpus, gpus)
    if n >= plan.max_gateways:
        return None
    g = plan.gateways
    need = plan.model_cpus + plan.max_gateways * g.cpus
    grow = f"num_cpus = {math.ceil(need - _EPS)}" if plan.local else "add nodes"
    share = _down((cpus - plan.model_cpus) / plan.max_gateways)
    fix = f"gateway_cpus = {_num(share)}, or {grow}" if share > 0 else grow
    return (f"autoscaling stops at {n} gateways of [ray] max_gateways {plan.max_gateways}: the cluster's "
            f"{_num(cpus)} free Ray CPUs hold the models' {_num(plan.model_cpus)} and {n} x [ray] gateway_cpus "
            f"{_num(g.cpus)}; set [ray] {fix}")


def expected(plan: Plan, cpus: float, gpus: float = 0.0) -> dict[str, int]:
    """The replicas of each deployment that can run (placed in deploy order: models, then gateways).

    >>> expected(plan_of(_ray(gateways=2), local=True), cpus=2.0)
    {'audio': 1, 'text': 1, 'whisper': 1, 'CallGateway': 2}
    >>> expected(plan_of(_ray(gateways=2, model_cpus=1.0), local=True), cpus=2.0)
    {'audio': 1, 'text': 1, 'whisper': 0, 'CallGateway': 0}
    """
    out: dict[str, int] = {}
    left_c, left_g = cpus, gpus
    for a in (*plan.models, plan.gateways):
        n = a.replicas
        if a.cpus > 0:
            n = min(n, max(0, math.floor(left_c / a.cpus + _EPS)))
        if a.gpus > 0:
            n = min(n, max(0, math.floor(left_g / a.gpus + _EPS)))
        out[a.name] = n
        left_c -= n * a.cpus
        left_g -= n * a.gpus
    return out


def running_line(name: str, states: dict[str, int], asked: int | None = None) -> str:
    """How many replicas of a deployment run, from Ray Serve's replica states.

    >>> running_line("CallGateway", {"RUNNING": 1, "STARTING": 1}, 2)
    '1 of 2 CallGateway replica(s) running (1 starting)'
    >>> running_line("CallGateway", {"RUNNING": 2})
    '2 CallGateway replica(s) running'
    """
    running = int(states.get("RUNNING", 0))
    head = f"{running} of {asked}" if asked is not None else f"{running}"
    rest = [f"{n} {state.lower()}" for state, n in sorted(states.items()) if state != "RUNNING" and n]
    return f"{head} {name} replica(s) running" + (f" ({', '.join(rest)})" if rest else "")


@dataclass
class ReplicaWait:
    """Waiting for ``want`` running replicas, until ``deadline`` (a monotonic time the caller's
    clock gives): :meth:`step` says ``"up"``, ``"wait"`` or ``"timeout"``.

    >>> w = ReplicaWait(want=2, deadline=10.0)
    >>> w.step(1.0, {"RUNNING": 1, "STARTING": 1}), w.step(5.0, {"RUNNING": 2}), w.step(11.0, {})
    ('wait', 'up', 'timeout')
    """

    want: int
    deadline: float

    def step(self, now: float, states: dict[str, int]) -> str:
        if int(states.get("RUNNING", 0)) >= self.want:
            return "up"
        return "timeout" if now >= self.deadline else "wait"


def _ray(**kw):
    """A ``[ray]`` section with ``kw`` over the defaults (for the examples above)."""
    from streamer.runtime.config import RayConfig

    kw.setdefault("max_gateways", max(1, kw.get("gateways", 1)))
    return RayConfig(**kw)
