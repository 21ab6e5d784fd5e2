"""What a session log says about a speaker, as plain numbers: shared by ``ser-analyze``'s
summary.csv and ``ser-report``.

A log's speech is read as *segments*: its ``utterance`` records when it has any (each with
its own label, from the whole utterance), otherwise its ``window`` records (logs written
before utterances existed; there a window's ``label`` was the rolling label). Shares and
means are weighted by segment duration. Arousal and valence are the record's fused ``dims``,
or, for logs without them, the same circumplex mapping (``streamer.core.dims``) applied to the
fused probabilities.

>>> u = [{"type": "utterance", "start_s": 0.0, "end_s": 3.0, "label": "angry", "confidence": 0.8,
...       "uncertain": False, "dims": {"fused": {"arousal": 0.8, "valence": -0.6}}, "probs": {}},
...      {"type": "utterance", "start_s": 4.0, "end_s": 5.0, "label": "neutral", "confidence": 0.3,
...       "uncertain": True, "dims": {"fused": {"arousal": -0.2, "valence": 0.2}}, "probs": {}}]
>>> s = summarise_records([], u)
>>> s.kind, s.speech_s, s.dominant, round(s.share["angry"], 2), s.uncertain_share, s.mean_arousal
('utterance', 4.0, 'angry', 0.75, 0.25, 0.55)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streamer.core.dims import dims as dims_of
from streamer.core.labels import LABELS


@dataclass(frozen=True)
class Segment:
    """One utterance, or one window of a log without utterances."""

    start_s: float
    end_s: float
    label: str
    confidence: float
    uncertain: bool | None  # None: the log predates the uncertain flag
    arousal: float | None
    valence: float | None
    transcript: str = ""
    fused: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return max(0.0, self.end_s - self.start_s)


def fused_dims(rec: dict) -> dict | None:
    """A record's fused arousal/valence: its ``dims`` when logged, else mapped from its fused
    probabilities; None when it has neither."""
    d = (rec.get("dims") or {}).get("fused")
    if d:
        return d
    p = (rec.get("probs") or {}).get("fused")
    return dims_of(p) if p else None


def segment(rec: dict) -> Segment:
    d = fused_dims(rec) or {}
    return Segment(float(rec["start_s"]), float(rec["end_s"]), rec["label"], float(rec.get("confidence", 0.0)),
                   rec.get("uncertain"), d.get("arousal"), d.get("valence"), rec.get("transcript") or "",
                   (rec.get("probs") or {}).get("fused") or {})


def segments(windows: Iterable[dict], utterances: Iterable[dict]) -> list[Segment]:
    """Utterances when there are any, else windows, in time order."""
    recs = list(utterances) or list(windows)
    return sorted((segment(r) for r in recs), key=lambda s: s.start_s)


@dataclass(frozen=True)
class Summary:
    kind: str  # "utterance", "window" or "" (nothing said)
    count: int
    speech_s: float
    time_in: dict[str, float]
    share: dict[str, float]
    dominant: str
    mean_confidence: float | None
    uncertain_share: float | None
    mean_arousal: float | None
    mean_valence: float | None


def _weighted(pairs: list[tuple[float, float]]) -> float | None:
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    if total <= 0:
        return sum(x for x, _ in pairs) / len(pairs)
    return sum(x * w for x, w in pairs) / total


def summarise(segs: list[Segment], kind: str) -> Summary:
    """Time per label, dominant label, and duration-weighted means of ``segs`` (of ``kind``
    "utterance" or "window"). Windows keep the unweighted mean confidence summary.csv always
    had (they all have about one length)."""
    time_in = {k: 0.0 for k in LABELS}
    for s in segs:
        time_in[s.label] = time_in.get(s.label, 0.0) + s.duration
    speech = sum(time_in.values())
    share = {k: (time_in[k] / speech if speech else 0.0) for k in LABELS}
    dominant = max(LABELS, key=lambda k: time_in[k]) if speech else (segs[0].label if segs else "")
    if kind == "window":
        conf = sum(s.confidence for s in segs) / len(segs) if segs else None
    else:
        conf = _weighted([(s.confidence, s.duration) for s in segs])
    flagged = [s for s in segs if s.uncertain is not None]
    unc = _weighted([(float(s.uncertain), s.duration) for s in flagged]) if flagged else None
    ar = _weighted([(s.arousal, s.duration) for s in segs if s.arousal is not None])
    va = _weighted([(s.valence, s.duration) for s in segs if s.valence is not None])
    return Summary(kind, len(segs), speech, time_in, share, dominant, conf, unc, ar, va)


def summarise_records(windows: list[dict], utterances: list[dict]) -> Summary:
    """:func:`summarise` over a log's records: utterances when there are any, else windows."""
    kind = "utterance" if utterances else ("window" if windows else "")
    return summarise(segments(windows, utterances), kind)
