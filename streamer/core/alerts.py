"""Alert rules for the call desk: pure, over a call's window results and the clock.

A rule (``[[alerts]]`` in config.toml) watches one track (``customer``, ``agent``) or any.
A window *meets* it when the window is certain and either its fused label is one of
``labels`` or its fused arousal is above ``arousal_above`` and its valence below
``valence_below`` (a bound left out is not checked), with at least ``min_confidence``. An
uncertain window never meets a rule, so it breaks a run. ``for_windows`` windows in a row
that meet it, on one track, raise an alert; then the rule is quiet on that track for
``cooldown_s`` seconds of the track's time. A rule with ``silence_s`` > 0 is a dead-air
rule instead: it fires when no track has had speech for that long, or when the stream has
stopped sending audio for that long (wall-clock time, checked by :meth:`Alerts.tick`).

>>> rules = (AlertRule("angry customer", track="customer", labels=("angry",), for_windows=2, cooldown_s=60),)
>>> a = Alerts(rules, "CA1")
>>> w = lambda end, label="angry", unc=False: {"type": "window", "track": "customer", "end_s": end, "label": label,
...                                           "confidence": 0.7, "uncertain": unc, "dims": {}}
>>> a.on_window(w(2.5), 0.0), [x["reason"] for x in a.on_window(w(5.0), 0.0)]
([], ['customer angry in 2 windows in a row, confidence 0.70'])
>>> a.on_window(w(7.5), 0.0), a.on_window(w(10.0), 0.0)  # cooldown
([], [])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from streamer.core.errors import ConfigError
from streamer.core.labels import LABELS


@dataclass(frozen=True)
class AlertRule:
    """One ``[[alerts]]`` table."""

    name: str = ""
    track: str = "any"  # a track name (customer, agent, ...) or "any"
    labels: tuple[str, ...] = ()  # any of these fused labels meets the rule
    min_confidence: float = 0.0
    arousal_above: float | None = None  # or: fused arousal above this ...
    valence_below: float | None = None  # ... and valence below this
    for_windows: int = 3  # windows in a row
    cooldown_s: float = 60.0
    silence_s: float = 0.0  # > 0: a dead-air rule (no speech, or no audio, this long)

    def __post_init__(self) -> None:
        where = f"config [[alerts]] {self.name or '(no name)'}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("config [[alerts]]: every rule needs a name")
        labels = tuple(self.labels)
        bad = [x for x in labels if x not in LABELS]
        if bad:
            raise ConfigError(f"{where}: labels {bad} are not among {', '.join(LABELS)}")
        object.__setattr__(self, "labels", labels)
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"{where}: min_confidence must be in [0, 1]")
        for key in ("arousal_above", "valence_below"):
            v = getattr(self, key)
            if v is not None and not -1 <= v <= 1:
                raise ConfigError(f"{where}: {key} must be in [-1, 1]")
        if self.for_windows < 1:
            raise ConfigError(f"{where}: for_windows must be at least 1")
        if self.cooldown_s < 0 or self.silence_s < 0:
            raise ConfigError(f"{where}: cooldown_s and silence_s must be >= 0")
        if self.silence_s == 0 and not labels and self.arousal_above is None and self.valence_below is None:
            raise ConfigError(f"{where}: give labels, arousal_above/valence_below, or silence_s (a dead-air rule)")

    @property
    def dead_air(self) -> bool:
        return self.silence_s > 0

    def applies_to(self, track: str | None) -> bool:
        return self.track == "any" or self.track == track

    def meets(self, w: dict) -> str | None:
        """Why window record ``w`` meets the rule ("angry", "arousal +0.71, valence -0.40"), or None."""
        if self.dead_air or w.get("uncertain") or float(w.get("confidence") or 0.0) < self.min_confidence:
            return None
        if self.labels and w.get("label") in self.labels:
            return str(w["label"])
        if self.arousal_above is None and self.valence_below is None:
            return None
        fused = (w.get("dims") or {}).get("fused") or {}
        a, v = fused.get("arousal"), fused.get("valence")
        if (self.arousal_above is not None and (a is None or not a > self.arousal_above)) or \
                (self.valence_below is not None and (v is None or not v < self.valence_below)):
            return None
        parts = ([f"arousal {a:+.2f}"] if self.arousal_above is not None else []) + \
            ([f"valence {v:+.2f}"] if self.valence_below is not None else [])
        return ", ".join(parts)


DEFAULT_RULES = (
    AlertRule("angry customer", track="customer", labels=("angry",), arousal_above=0.5, valence_below=-0.2,
              for_windows=3, cooldown_s=60.0),
    AlertRule("dead air", silence_s=30.0, cooldown_s=60.0),
)


@dataclass
class _Run:
    count: int = 0
    confidences: list[float] = field(default_factory=list)
    why: str = ""
    quiet_until: float = -math.inf  # track time


class Alerts:
    """The rules of one call: feed it the call's window records and the clock; it returns
    the alerts raised (dicts: ``type`` alert, ``id``, ``rule``, ``call_id``, ``track``,
    ``reason``, ``at_s`` (track time, or None for dead air), ``wall_s``)."""

    def __init__(self, rules: tuple[AlertRule, ...], call_id: str, started: float = 0.0) -> None:
        self.rules = rules
        self.call_id = call_id
        self.count = 0
        self._runs: dict[tuple[str, str], _Run] = {}
        self._last_speech = started
        self._last_audio = started
        self._quiet_until: dict[str, float] = {}  # dead-air rules, wall time

    def _alert(self, rule: AlertRule, track: str | None, reason: str, at_s: float | None, now: float) -> dict:
        self.count += 1
        return {"type": "alert", "id": f"{self.call_id}-{self.count}", "rule": rule.name, "call_id": self.call_id,
                "track": track, "reason": reason, "at_s": None if at_s is None else round(at_s, 3), "wall_s": round(now, 3)}

    def on_audio(self, now: float) -> None:
        """Audio arrived (any track) at wall-clock ``now``."""
        self._last_audio = now

    def on_window(self, w: dict, now: float) -> list[dict]:
        """A window record of the call (``track``, ``end_s``, ``label``, ...), seen at ``now``."""
        self._last_speech = now
        track = w.get("track")
        out = []
        for rule in self.rules:
            if rule.dead_air or not rule.applies_to(track):
                continue
            run = self._runs.setdefault((rule.name, str(track)), _Run())
            why = rule.meets(w)
            if why is None:
                run.count, run.confidences = 0, []
                continue
            run.count += 1
            run.confidences.append(float(w.get("confidence") or 0.0))
            run.why = why
            end = float(w.get("end_s") or 0.0)
            if run.count >= rule.for_windows and end >= run.quiet_until:
                conf = sum(run.confidences[-rule.for_windows:]) / rule.for_windows
                reason = f"{track} {why} in {rule.for_windows} window{'s' if rule.for_windows > 1 else ''} in a row, confidence {conf:.2f}"
                out.append(self._alert(rule, track, reason, end, now))
                run.quiet_until = end + rule.cooldown_s
                run.count, run.confidences = 0, []
        return out

    def tick(self, now: float, ended: bool = False) -> list[dict]:
        """Dead-air rules at wall-clock ``now`` (call it about once a second)."""
        out = []
        if ended:
            return out
        for rule in self.rules:
            if not rule.dead_air or now < self._quiet_until.get(rule.name, -math.inf):
                continue
            no_audio = now - self._last_audio
            no_speech = now - self._last_speech
            if no_audio >= rule.silence_s:
                reason = f"the stream sent no audio for {no_audio:.0f} s"
            elif no_speech >= rule.silence_s:
                reason = f"no speech on any track for {no_speech:.0f} s"
            else:
                continue
            out.append(self._alert(rule, None, reason, None, now))
            self._quiet_until[rule.name] = now + max(rule.cooldown_s, rule.silence_s)
        return out
