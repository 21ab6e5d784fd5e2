"""Choosing the audio recipe by what transfers: leave-one-corpus-out over pooled statistics.

The rows are :mod:`streamer.train.pooled` windows (mean and std of each encoder's frames and
of the prosody frames). A :class:`Recipe` says which blocks to use, how to standardise them
and how strongly to regularise a multinomial logistic regression over them. Every recipe is
scored on the same splits:

- **LOCO**: train on two corpora, test on every clip of the third (three runs);
- **leave-speakers-out** inside RAVDESS (5 folds of 4 actors) and nEMO (3 folds of 3 speakers):
  a corpus's other speakers and every other corpus train.

Scores are UA (7-way argmax) and ``ua_present`` (argmax over the labels the test corpus has),
per run; the recipe is chosen by the mean LOCO ``ua_present`` together with the mean
leave-speakers-out UA, never by a test speaker's score alone.

Standardisation (``norm``):

- ``global``: one mean and scale over the training rows (the test rows use them too);
- ``corpus``: each corpus (each test group) by its own mean and scale, computed without labels:
  at test time these are the statistics of the traffic the model sees (live: a running
  estimate per stream, :class:`streamer.audio.adapt.RunningNorm`);
- ``speaker``: each speaker by their own statistics (an upper bound: in a call a speaker may
  hold one emotion throughout, and their own mean then removes the emotion);
- ``mixed``: every training row twice, standardised by its corpus and by the training prior,
  so the head reads a stream before it has statistics of its own as well as after.

>>> groups = np.array([0, 0, 1, 1])
>>> standardise_groups(np.array([[1.0], [3.0], [10.0], [14.0]]), groups).ravel().round(2).tolist()
[-1.0, 1.0, -1.0, 1.0]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from streamer.audio.pooling import softmax_t
from streamer.core.labels import INDEX, LABELS
from streamer.train.metrics import arousal_bacc, expected_calibration_error, summary
from streamer.train.pooled import PooledSet

log = logging.getLogger(__name__)

EPS = 1e-3


def standardise_groups(x: NDArray, groups: NDArray) -> NDArray[np.float32]:
    """Each group of rows standardised by its own mean and standard deviation."""
    out = np.empty_like(x, dtype=np.float32)
    for g in np.unique(groups):
        sel = groups == g
        out[sel] = (x[sel] - x[sel].mean(0)) / (x[sel].std(0) + EPS)
    return out


@dataclass(frozen=True)
class Recipe:
    """One way to turn pooled rows into a classifier."""

    blocks: tuple[str, ...] = ("embedded:tiny.en", "prosody")
    norm: str = "corpus"  # global | corpus | speaker | mixed (each row twice: by its corpus, and by the prior)
    l2: float = 0.003
    balance: str = "corpus"  # corpus: each training corpus the same weight, classes balanced inside | clip
    copies: tuple[str, ...] = ()  # augmented copies whose rows join the training rows

    def __post_init__(self) -> None:
        if self.norm not in ("global", "corpus", "speaker", "mixed"):
            raise ValueError(f"norm must be global, corpus, speaker or mixed, not {self.norm!r}")
        if self.balance not in ("corpus", "clip"):
            raise ValueError(f"balance must be corpus or clip, not {self.balance!r}")

    @property
    def name(self) -> str:
        short = "+".join(b.removeprefix("embedded:") for b in self.blocks)
        extra = f" copies={'+'.join(self.copies)}" if self.copies else ""
        return f"{short} norm={self.norm} l2={self.l2:g} balance={self.balance}{extra}"


@dataclass
class Rows:
    """The windows of every clip of all corpora, in one table."""

    x: NDArray[np.float32]
    clip: NDArray[np.int64]       # global clip index of each row
    frames: NDArray[np.int64]
    y: NDArray[np.int64]          # per clip
    corpus: NDArray[np.str_]      # per clip
    speaker: NDArray[np.str_]     # per clip
    blocks: dict[str, tuple[int, int]] = field(default_factory=dict)
    phone_x: NDArray[np.float32] | None = None
    phone_clip: NDArray[np.int64] | None = None
    phone_frames: NDArray[np.int64] | None = None
    aug_x: NDArray[np.float32] | None = None      # augmented copies' rows (training only)
    aug_clip: NDArray[np.int64] | None = None
    aug_copy: NDArray[np.str_] | None = None
    paths: list[str] = field(default_factory=list)  # per clip

    def with_copies(self, copies: dict[str, Sequence[PooledSet]]) -> "Rows":
        """These rows plus augmented copies' rows ({copy name: one set per corpus, in the
        order of :meth:`join`}); a copy's row belongs to its clip, so it trains only when
        its clip does."""
        xs, clips, names = [], [], []
        for name, sets in copies.items():
            base = 0
            for s in sets:
                xs.append(s.x)
                clips.append(s.owner + base)
                names += [name] * len(s.owner)
                base += len(s.labels)
        if not xs:
            return self
        return replace(self, aug_x=np.concatenate(xs), aug_clip=np.concatenate(clips), aug_copy=np.array(names))

    @classmethod
    def join(cls, sets: Sequence[PooledSet]) -> "Rows":
        xs, clips, frames, ys, corpora, speakers, paths = [], [], [], [], [], [], []
        px, pc, pf = [], [], []
        base = 0
        for s in sets:
            xs.append(s.x)
            clips.append(s.owner + base)
            frames.append(s.frames)
            px.append(s.phone_x.reshape(-1, s.x.shape[1]))
            pc.append(s.phone_owner + base)
            pf.append(s.phone_frames)
            ys += [INDEX[lab] for lab in s.labels]
            corpora += s.corpora
            speakers += s.speakers
            paths += s.paths
            base += len(s.labels)
        return cls(np.concatenate(xs), np.concatenate(clips), np.concatenate(frames), np.array(ys), np.array(corpora),
                   np.array(speakers), dict(sets[0].blocks), np.concatenate(px), np.concatenate(pc), np.concatenate(pf),
                   paths=paths)

    def cols(self, blocks: Sequence[str]) -> NDArray[np.int64]:
        return np.concatenate([np.arange(*self.blocks[b]) for b in blocks])


def clip_weights(rows: Rows, clips: NDArray[np.int64], balance: str) -> NDArray[np.float64]:
    """Per clip weight: classes balanced within each corpus, each corpus the same total
    (``balance="corpus"``), or classes balanced over all clips (``"clip"``)."""
    w = np.zeros(len(clips))
    corp = rows.corpus[clips] if balance == "corpus" else np.zeros(len(clips), "<U1")
    for c in np.unique(corp):
        in_c = corp == c
        labels = np.unique(rows.y[clips][in_c])
        for lab in labels:
            sel = in_c & (rows.y[clips] == lab)
            w[sel] = 1.0 / (sel.sum() * len(labels))
    return w / w.sum()


def _groups(rows: Rows, clips: NDArray[np.int64], norm: str) -> NDArray:
    if norm in ("corpus", "mixed"):
        return rows.corpus[clips]
    if norm == "speaker":
        return rows.speaker[clips]
    return np.zeros(len(clips), int)


def prior_moments(x: NDArray, groups: NDArray):
    """The training prior of :class:`streamer.audio.adapt.RunningNorm`: the mean of the
    groups' means and of their variances (what a per-group standardised head expects)."""
    from streamer.audio.adapt import Moments

    ms = [Moments.of(x[groups == g]) for g in np.unique(groups)]
    return Moments(np.mean([m.mean for m in ms], 0), np.mean([m.var for m in ms], 0), float(len(x)))


def running_standardise(x: NDArray, streams: NDArray, prior, prior_windows: float, horizon: float,
                        seed: int = 0) -> NDArray[np.float32]:
    """Rows standardised as live streams would be: each stream's rows in a random order, each
    row by the running statistics of the rows before it (:class:`RunningNorm`)."""
    from streamer.audio.adapt import RunningNorm

    out = np.empty_like(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    for s in np.unique(streams):
        idx = np.flatnonzero(streams == s)
        rng.shuffle(idx)
        norm = RunningNorm(prior, prior_windows, horizon)
        for i in idx:
            out[i] = norm.standardise(x[i:i + 1])[0]
            norm.update(x[i:i + 1])
    return out


ADAPT_MODES = ("batch", "running", "running_single", "prior")


_FITS: dict[tuple, tuple] = {}  # (rows, recipe, training clips, iters) -> the fit: the same split is fitted once


def fit(rows: Rows, recipe: Recipe, train: NDArray[np.bool_], iters: int = 100):
    """The head of ``recipe`` fitted on the clips ``train`` (and their augmented copies), with
    the clean training rows and their groups (for the prior). Memoised per split."""
    import hashlib

    from streamer.train.linear import fit_linear

    key = (id(rows), recipe, hashlib.sha1(np.packbits(train).tobytes()).hexdigest(), iters)
    hit = _FITS.get(key)
    if hit is not None and hit[0] is rows:
        return hit[1]
    cols = rows.cols(recipe.blocks)
    tr_rows = train[rows.clip]
    x_tr = rows.x[tr_rows][:, cols]
    c_tr = rows.clip[tr_rows]
    g_tr = _groups(rows, c_tr, recipe.norm).astype(str)
    x_prior, g_prior = x_tr, g_tr
    if recipe.copies and rows.aug_x is not None:
        use = train[rows.aug_clip] & np.isin(rows.aug_copy, recipe.copies)
        x_tr = np.concatenate([x_tr, rows.aug_x[use][:, cols]])
        c_tr = np.concatenate([c_tr, rows.aug_clip[use]])
        g_tr = np.concatenate([g_tr, np.char.add(_groups(rows, rows.aug_clip[use], recipe.norm).astype(str),
                                                 np.char.add("|", rows.aug_copy[use]))])
    raw = x_tr
    if recipe.norm != "global":
        x_tr = standardise_groups(x_tr, g_tr)
    tr_clips = np.flatnonzero(train)
    cw = np.zeros(len(rows.y))
    cw[tr_clips] = clip_weights(rows, tr_clips, recipe.balance)
    n_rows = np.bincount(c_tr, minlength=len(rows.y))
    w = cw[c_tr] / n_rows[c_tr]
    if recipe.norm == "mixed":  # the same rows standardised by the prior too: a stream before it has statistics
        prior = prior_moments(x_prior, g_prior)
        x_tr = np.concatenate([x_tr, prior.standardise(raw)])
        c_tr = np.concatenate([c_tr, c_tr])
        w = np.concatenate([w, w]) / 2
    head = fit_linear(x_tr, rows.y[c_tr], w, len(LABELS), recipe.l2, iters=iters)
    if len(_FITS) > 64:
        _FITS.clear()
    _FITS[key] = (rows, (head, x_prior, g_prior))
    return head, x_prior, g_prior


def fit_and_predict(rows: Rows, recipe: Recipe, train: NDArray[np.bool_], test: NDArray[np.bool_],
                    test_group: str | None = None, phone: bool = False, iters: int = 100,
                    adapt: str = "batch", prior_windows: float = 20.0, horizon: float = 300.0):
    """Fit on the clips ``train`` (per clip mask), predict the clips ``test``; returns
    (test clip indices, their window-pooled logits at T=1, the head). ``test_group``
    standardises all test rows as one group (a LOCO corpus, a fold's speakers) under
    ``norm="corpus"``. ``adapt`` says how test rows are standardised under ``norm="corpus"``:
    ``batch`` by the test group's own statistics; ``running`` as live streams, one per test
    speaker (mixed emotions); ``running_single`` one stream per speaker and emotion (a caller
    who stays in one emotion); ``prior`` by the training prior alone (no adaptation)."""
    cols = rows.cols(recipe.blocks)
    head, x_prior, g_prior = fit(rows, recipe, train, iters)
    if phone:
        sel = test[rows.phone_clip]
        x_te, c_te, f_te = rows.phone_x[sel][:, cols], rows.phone_clip[sel], rows.phone_frames[sel]
    else:
        sel = test[rows.clip]
        x_te, c_te, f_te = rows.x[sel][:, cols], rows.clip[sel], rows.frames[sel]
    if recipe.norm in ("corpus", "mixed") and adapt != "batch":
        prior = prior_moments(x_prior, g_prior)
        if adapt == "prior":
            streams = np.zeros(len(c_te), int)
            prior_windows = 1e12
        elif adapt == "running":
            streams = rows.speaker[c_te]
        else:
            streams = np.char.add(rows.speaker[c_te], rows.y[c_te].astype(str))
        x_te = running_standardise(x_te, streams, prior, prior_windows, horizon)
    elif recipe.norm in ("corpus", "mixed"):
        x_te = standardise_groups(x_te, np.zeros(len(c_te), int) if test_group else rows.corpus[c_te])
    elif recipe.norm == "speaker":
        x_te = standardise_groups(x_te, rows.speaker[c_te])
    z = head.logits(x_te)
    clips, inv = np.unique(c_te, return_inverse=True)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pooled = np.zeros((len(clips), len(LABELS)))
    np.add.at(pooled, inv, p * f_te[:, None])
    pooled /= pooled.sum(1, keepdims=True)
    return clips, np.log(np.maximum(pooled, 1e-12)), head


def fit_temperature(logits: NDArray, y: NDArray, grid: NDArray = np.exp(np.linspace(np.log(0.3), np.log(8), 200))) -> float:
    """The temperature with the lowest negative log-likelihood on (logits, y)."""
    y = np.asarray(y)
    if len(y) == 0:
        return 1.0
    nll = [-np.log(softmax_t(logits, t)[np.arange(len(y)), y] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


@dataclass
class Split:
    name: str
    kind: str  # loco | speakers
    test_corpus: str
    train: NDArray[np.bool_]
    test: NDArray[np.bool_]


def splits(rows: Rows, corpora: Sequence[str] = ("ravdess", "tess", "nemo"),
           speaker_folds: dict[str, int] | None = None) -> list[Split]:
    """LOCO over ``corpora`` and leave-speakers-out folds (consecutive speakers, sorted) in
    the corpora of ``speaker_folds`` ({corpus: number of folds})."""
    speaker_folds = {"ravdess": 5, "nemo": 3} if speaker_folds is None else speaker_folds
    out = []
    for c in corpora:
        out.append(Split(f"loco_{c}", "loco", c, rows.corpus != c, rows.corpus == c))
    for c, k in speaker_folds.items():
        spk = sorted(set(rows.speaker[rows.corpus == c]))
        for i, part in enumerate(np.array_split(np.array(spk), k)):
            test = np.isin(rows.speaker, part)
            out.append(Split(f"{c}_fold{i + 1}", "speakers", c, ~test, test))
    return out


def evaluate(rows: Rows, recipe: Recipe, the_splits: Sequence[Split], phone: bool = True, adapt: str = "batch",
             prior_windows: float = 20.0, horizon: float = 300.0) -> dict:
    """Every split's figures for one recipe, the LOCO predictions pooled for calibration, and
    the criterion (mean LOCO ``ua_present`` + mean leave-speakers-out UA) / 2."""
    runs, loco_logits, loco_y, loco_corpus = {}, [], [], []
    for sp in the_splits:
        kw = dict(test_group=sp.name, adapt=adapt, prior_windows=prior_windows, horizon=horizon)
        clips, logits, _ = fit_and_predict(rows, recipe, sp.train, sp.test, **kw)
        y = rows.y[clips]
        rep = summary(softmax_t(logits, 1.0), y)
        run = {"kind": sp.kind, "test_corpus": sp.test_corpus, "n": int(len(y)), "ua": rep["ua"],
               "ua_present": rep["ua_present"], "ece_t1": rep["ece"], "macro_f1": rep["macro_f1"],
               "arousal_bacc_t1": arousal_bacc(softmax_t(logits, 1.0), y)}
        if phone and sp.kind == "speakers" and rows.phone_clip is not None and np.isin(rows.phone_clip, np.flatnonzero(sp.test)).any():
            pc, plog, _ = fit_and_predict(rows, recipe, sp.train, sp.test, phone=True, **kw)
            run["telephone_ua"] = summary(softmax_t(plog, 1.0), rows.y[pc])["ua"]
        runs[sp.name] = run
        if sp.kind == "loco":
            loco_logits.append(logits)
            loco_y.append(y)
            loco_corpus += [sp.test_corpus] * len(y)
    out = {"recipe": recipe.name, "adapt": adapt, "runs": runs}
    loco = [r for r in runs.values() if r["kind"] == "loco"]
    spk = [r for r in runs.values() if r["kind"] == "speakers"]
    if loco:
        out["loco_mean_ua"] = float(np.mean([r["ua"] for r in loco]))
        out["loco_mean_ua_present"] = float(np.mean([r["ua_present"] for r in loco]))
        out.update(calibrate_loco(np.concatenate(loco_logits), np.concatenate(loco_y), np.array(loco_corpus)))
    if spk:
        out["speakers_mean_ua"] = float(np.mean([r["ua"] for r in spk]))
        for c in sorted({r["test_corpus"] for r in spk}):
            out[f"speakers_{c}_ua"] = float(np.mean([r["ua"] for r in spk if r["test_corpus"] == c]))
        phones = [r["telephone_ua"] for r in spk if "telephone_ua" in r]
        if phones:
            out["speakers_telephone_ua"] = float(np.mean(phones))
    if loco and spk:
        out["criterion"] = (out["loco_mean_ua_present"] + out["speakers_mean_ua"]) / 2
    return out


def calibrate_loco(logits: NDArray, y: NDArray, corpus: NDArray) -> dict:
    """One temperature on the pooled LOCO predictions, and ECE at it: pooled and per test
    corpus, and cross-fitted (each corpus scored at the temperature of the other two)."""
    t = fit_temperature(logits, y)
    out = {"temperature": t, "loco_ece_t1": expected_calibration_error(softmax_t(logits, 1.0), y),
           "loco_ece": expected_calibration_error(softmax_t(logits, t), y), "loco_ece_per_corpus": {},
           "loco_ece_crossfit": {}}
    cross = np.zeros_like(logits, dtype=np.float64)
    out["loco_arousal_bacc"] = {}
    for c in np.unique(corpus):
        sel = corpus == c
        out["loco_ece_per_corpus"][str(c)] = expected_calibration_error(softmax_t(logits[sel], t), y[sel])
        out["loco_arousal_bacc"][str(c)] = arousal_bacc(softmax_t(logits[sel], t), y[sel])
        t_other = fit_temperature(logits[~sel], y[~sel])
        cross[sel] = softmax_t(logits[sel], t_other)
        out["loco_ece_crossfit"][str(c)] = expected_calibration_error(cross[sel], y[sel])
    out["loco_ece_crossfit_pooled"] = expected_calibration_error(cross, y)
    return out
