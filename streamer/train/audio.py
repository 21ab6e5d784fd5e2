"""Training and speaker-independent evaluation of the audio emotion network.

``fit`` trains one network with early stopping on validation speakers and calibrates it by
temperature scaling on the same speakers. ``streamer.train.ablation.cross_validate`` runs leave-speakers-out folds
over the evaluation corpus (RAVDESS actors): for each fold the test speakers are never
seen, and validation speakers are drawn from the remaining ones. Other corpora (TESS) are
training data only. Augmented copies live inside their clip, so they share its split.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional as F

from streamer.audio.emotion import collate
from streamer.audio.windows import FrameInputs
from streamer.audio.pooling import pool_windows
from streamer.audio.features import PROSODY_NAMES
from streamer.audio.model import AudioEmotionNet, NetConfig
from streamer.core.errors import ConfigError
from streamer.core.labels import INDEX
from streamer.train.cache import ClipInputs
from streamer.train.metrics import summary

log = logging.getLogger(__name__)

F0_COL = PROSODY_NAMES.index("f0_semitones")
VOICED_COL = PROSODY_NAMES.index("voiced")


@dataclass(frozen=True)
class TrainConfig:
    """One training recipe; ``models/audio-emotion/train.toml`` holds the shipped one."""

    data: tuple[str, ...] = ("../shared/data/speech/RAVDESS", "../shared/data/speech/TESS")
    eval_corpus: str = "ravdess"
    cache_dir: str = "cache"
    seed: int = 1234
    folds: int = 5
    val_speakers: int = 3
    calib_speakers: int = 0  # >0: temperature on these extra speakers, not on the stopping speakers
    epochs: int = 25
    patience: int = 6
    select_after: int = 10
    batch_size: int = 32
    samples_per_epoch: int = 2400
    lr: float = 2e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    ema_decay: float = 0.0          # 0: off; else validation, selection and the result use an EMA of the weights
    clean_prob: float = 0.4
    crop_frames: int = 176
    eval_corpus_share: float = 0.6
    pitch_semitones: float = 2.0
    time_mask: float = 0.15
    jobs: int = 2
    # Linear head over pooled window statistics, blended with the network (streamer.audio.linear).
    linear_candidates: tuple[str, ...] = ("whisper:0.01", "both:0.01")  # "<inputs>:<l2>"; chosen with the blend weight (empty: no head)
    linear_copies: str = "all"       # "all": clean + augmented copies train it; "clean": clean clips only
    blend_weights: tuple[float, ...] = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)  # candidate weights of the linear logits
    loco: bool = True                # leave-one-corpus-out runs (train on one corpus, test on the others)
    loco_epochs: int = 8             # their budget (checkpoints from half of it, patience 4): one corpus alone fits fast
    temperature_from: str = "loco"   # "loco": one temperature fitted on the pooled LOCO predictions; "val": per model on its val speakers
    folds_dir: str = "runs/audio-folds"  # every LOAO fold model is saved here as a complete model folder
    net: NetConfig = field(default_factory=NetConfig)

    def __post_init__(self) -> None:
        checks = {
            "folds": self.folds >= 2, "val_speakers": self.val_speakers >= 1, "calib_speakers": self.calib_speakers >= 0, "epochs": self.epochs >= 1,
            "patience": self.patience >= 1, "select_after": 1 <= self.select_after <= self.epochs, "batch_size": self.batch_size >= 2, "lr": self.lr > 0,
            "samples_per_epoch": self.samples_per_epoch >= self.batch_size,
            "clean_prob": 0 <= self.clean_prob <= 1, "ema_decay": 0 <= self.ema_decay < 1, "eval_corpus_share": 0 < self.eval_corpus_share <= 1,
            "crop_frames": self.crop_frames >= 25, "jobs": self.jobs >= 1, "linear_candidates": all(c.partition(":")[0] in ("whisper", "both") and c.partition(":")[2] for c in self.linear_candidates),
            "linear_copies": self.linear_copies in ("all", "clean"), "loco_epochs": self.loco_epochs >= 1, "temperature_from": self.temperature_from in ("loco", "val"),
            "blend_weights": len(self.blend_weights) > 0 and all(0 <= w <= 1 for w in self.blend_weights),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"training config: out-of-range value for {', '.join(bad)}")
        object.__setattr__(self, "data", tuple(self.data))
        object.__setattr__(self, "blend_weights", tuple(float(w) for w in self.blend_weights))
        object.__setattr__(self, "linear_candidates", tuple(self.linear_candidates))

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        from streamer.runtime.config import build

        return build(cls, raw, what="training config")


@dataclass
class ClipData:
    """Cached inputs of one clip: copies[0] is the clean clip, the rest its augmented copies;
    each copy is the list of its live windows."""

    label: int
    corpus: str
    speaker: str
    copies: list[ClipInputs]


# --- batches ------------------------------------------------------------------------------

def sample_weights(items: Sequence[ClipData], eval_corpus: str, share: float) -> NDArray[np.float64]:
    """Draw probabilities: the eval corpus gets ``share`` of the draws (all of them if alone),
    classes are balanced within each corpus."""
    counts = Counter((c.corpus, c.label) for c in items)
    corpora = {c.corpus for c in items}
    classes = {k: sum(1 for (cc, _) in counts if cc == k) for k in corpora}
    other = len(corpora - {eval_corpus})
    w = np.empty(len(items))
    for i, c in enumerate(items):
        if c.corpus == eval_corpus or other == 0:
            cshare = share if other else 1.0
        else:
            cshare = (1 - share) / other if eval_corpus in corpora else 1.0 / other
        w[i] = cshare / (classes[c.corpus] * counts[(c.corpus, c.label)])
    return w / w.sum()


def augment_inputs(inp: FrameInputs, cfg: TrainConfig, rng: np.random.Generator) -> FrameInputs:
    """Random crop of windows longer than ``crop_frames``, plus on-the-fly prosody
    augmentation: pitch offset, a time mask, feature jitter."""
    w = inp.whisper.astype(np.float32)
    p = inp.prosody.copy()
    t = len(w)
    if t > cfg.crop_frames:
        start = int(rng.integers(0, t - cfg.crop_frames + 1))
        w, p = w[start: start + cfg.crop_frames], p[start: start + cfg.crop_frames]
        t = cfg.crop_frames
    voiced = p[:, VOICED_COL] > 0.5
    p[voiced, F0_COL] += rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones) / 12.0
    p += rng.normal(0.0, 0.01, p.shape).astype(np.float32)
    span = int(rng.integers(0, max(1, int(cfg.time_mask * t)) + 1))
    if span and t > span * 2:
        s = int(rng.integers(0, t - span))
        p[s: s + span] = 0.0
    return FrameInputs(w, p)


def input_stats(items: Sequence[ClipData]) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    w = np.concatenate([win.whisper for c in items for win in c.copies[0]]).astype(np.float32)
    p = np.concatenate([win.prosody for c in items for win in c.copies[0]])
    return w.mean(0), w.std(0) + 1e-3, p.mean(0), p.std(0) + 1e-3


@torch.no_grad()
def window_logits(net: AudioEmotionNet, clips: Sequence[list[FrameInputs]], batch: int = 64) -> tuple[NDArray, NDArray, NDArray]:
    """Logits of every window of every clip: (N, 7) logits, (N,) owning clip, (N,) frames."""
    net.eval()
    flat = [(k, w) for k, ws in enumerate(clips) for w in ws]
    logits = []
    for s in range(0, len(flat), batch):
        logits.append(net(*collate([x for _, x in flat[s: s + batch]])).numpy())
    owner = np.array([k for k, _ in flat])
    frames = np.array([len(x) for _, x in flat], np.float64)
    return np.concatenate(logits).astype(np.float64), owner, frames


def clip_probs(net: AudioEmotionNet, clips: Sequence[list[FrameInputs]], temperature: float, batch: int = 64) -> NDArray[np.float32]:
    """Length-weighted mean of window probabilities at ``temperature``, one row per clip."""
    return pool_windows(*window_logits(net, clips, batch), len(clips), temperature)


def fit_temperature(net: AudioEmotionNet, clips: Sequence[list[FrameInputs]], labels: Sequence[int]) -> float:
    """Temperature minimising the NLL of ``clips`` (grid over log T, then refined)."""
    y = np.asarray(labels)
    logits, owner, frames = window_logits(net, clips)

    def nll(t: float) -> float:
        pr = pool_windows(logits, owner, frames, len(clips), t)
        return float(-np.mean(np.log(pr[np.arange(len(y)), y] + 1e-9)))

    grid = np.exp(np.linspace(np.log(0.3), np.log(5.0), 41))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.07, 0.07, 15))
    return float(min(fine, key=nll))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * net`` over parameters and float buffers (BatchNorm
    statistics); integer buffers are copied."""
    for e, x in zip(ema.state_dict().values(), net.state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(x, alpha=1.0 - decay)
        else:
            e.copy_(x)


@dataclass
class FitResult:
    net: AudioEmotionNet
    temperature: float
    best_epoch: int
    val_ua: float
    history: list[dict]


def fit(train: Sequence[ClipData], val: Sequence[ClipData], cfg: TrainConfig, net_cfg: NetConfig,
        seed: int, progress: Callable[[int, int, dict], None] | None = None,
        calib: Sequence[ClipData] | None = None) -> FitResult:
    """Train one network; early stopping on ``val`` (speakers not in train); temperature on
    ``calib`` when given (speakers in neither), else on ``val``."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = AudioEmotionNet(net_cfg)
    wm, ws, pm, ps = input_stats(train)
    for name, value in (("w_mean", wm), ("w_std", ws), ("p_mean", pm), ("p_std", ps)):
        getattr(net, name).copy_(torch.from_numpy(value))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.samples_per_epoch // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15)
    probs = sample_weights(train, cfg.eval_corpus, cfg.eval_corpus_share)
    val_clips = [c.copies[0] for c in val]
    val_y = [c.label for c in val]
    # An exponential moving average of the weights (buffers included) is what gets validated,
    # selected and shipped when ``ema_decay`` > 0: a smoother model for a noisy 3-speaker val.
    ema = copy.deepcopy(net) if cfg.ema_decay > 0 else net
    best = (-1.0, 0, copy.deepcopy(ema.state_dict()))
    history = []
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        total = 0.0
        for _ in range(steps):
            idx = rng.choice(len(train), size=cfg.batch_size, p=probs)
            batch = []
            for i in idx:
                copies = train[i].copies
                k = 0 if (len(copies) == 1 or rng.random() < cfg.clean_prob) else int(rng.integers(1, len(copies)))
                windows = copies[k]
                batch.append(augment_inputs(windows[int(rng.integers(0, len(windows)))], cfg, rng))
            w, p, lengths = collate(batch)
            y = torch.tensor([train[i].label for i in idx])
            loss = F.cross_entropy(net(w, p, lengths), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if ema is not net:
                ema_update(ema, net, cfg.ema_decay)
            total += float(loss.detach())
        pr = clip_probs(ema, val_clips, 1.0)
        scores = summary(pr, val_y)
        rec = {"epoch": epoch, "loss": total / steps, "val_ua": scores["ua"], "val_wa": scores["wa"]}
        history.append(rec)
        if progress:
            progress(epoch, cfg.epochs, rec)
        # Validation on 3 speakers is noisy: checkpoints before ``select_after`` (still at a
        # high learning rate) are not candidates, and stopping is only counted after it.
        if epoch < cfg.select_after:
            continue
        if scores["ua"] > best[0]:
            best = (scores["ua"], epoch, copy.deepcopy(ema.state_dict()))
        elif epoch - max(best[1], cfg.select_after) >= cfg.patience:
            break
    net.load_state_dict(best[2])
    net.eval()
    # Temperature on clean clips of speakers the checkpoint was not chosen on, when there are
    # some: the stopping speakers flatter the chosen checkpoint, so a temperature fitted on
    # them sharpens it too much. (Adding augmented copies made the model underconfident on
    # clean test speakers: fold ECE 0.08-0.09 -> 0.11-0.12.)
    cal = calib or val
    temperature = fit_temperature(net, [c.copies[0] for c in cal], [c.label for c in cal])
    return FitResult(net, temperature, best[1], best[0], history)


def speaker_folds(speakers: Sequence[str], k: int) -> list[list[str]]:
    """Consecutive groups of sorted speakers (RAVDESS: actors 1-4, 5-8, ... for k=5)."""
    ordered = sorted(set(speakers))
    if k > len(ordered):
        raise ConfigError(f"{k} folds need at least {k} speakers, found {len(ordered)}")
    size = math.ceil(len(ordered) / k)
    return [ordered[i: i + size] for i in range(0, len(ordered), size)]


def pick_val_speakers(candidates: Sequence[str], n: int, seed: int, calib: int = 0) -> tuple[list[str], list[str]]:
    """``n`` stopping speakers and ``calib`` calibration speakers drawn from ``candidates``."""
    rng = np.random.default_rng(seed)
    ordered = sorted(candidates)
    drawn = rng.choice(ordered, size=min(n + calib, len(ordered) - 1), replace=False).tolist()
    return sorted(drawn[:n]), sorted(drawn[n:])


def to_clip_data(clips, copies_by_name: dict[str, list[ClipInputs]], names: Sequence[str]) -> list[ClipData]:
    return [ClipData(INDEX[c.label], c.corpus, c.speaker, [copies_by_name[n][i] for n in names]) for i, c in enumerate(clips)]
