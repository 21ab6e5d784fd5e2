"""The learned fusion: one-sided cases, the uncertain flag, its configuration and model folder."""

import json

import numpy as np
import pytest

from streamer.runtime.config import Config
from streamer.core.paths import CHECKOUT as ROOT
from streamer.core.errors import ConfigError, ModelError
from streamer.core.labels import INDEX, LABELS
from streamer.core.fusion import Fuser, FusionConfig, LearnedFusion, fuse
from streamer.train.fusion import Examples, baseline, fit_fusion, fused_proba, ua

SHIPPED = ROOT / "models" / "fusion"
EMOTIONS = [k for k in LABELS if k != "neutral"]


def peaked(label: str, p: float) -> np.ndarray:
    v = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1))
    v[INDEX[label]] = p
    return v


def as_dict(v: np.ndarray) -> dict[str, float]:
    return dict(zip(LABELS, map(float, v)))


@pytest.fixture(scope="module")
def shipped() -> LearnedFusion:
    return LearnedFusion.load(SHIPPED)


@pytest.fixture(scope="module")
def flat_voice() -> np.ndarray:
    """What the audio model says, on average, about espeak-ng speech (recorded at fitting)."""
    return np.array(json.loads((SHIPPED / "metrics.json").read_text())["mean_audio_on_spoken"])


# --- one-sided cases: the fused answer is never below the better input -------------------------
# The known miss, kept visible (strict: it fails the suite once the fusion gets it right):
# espeak-ng's voice reads as happy to the audio model (metrics.json mean_audio_on_spoken:
# happy 0.60), and the fitting data pairs that voice with neutral sentences labelled neutral,
# so the gate hands a very sure neutral text (0.9) the answer over a happy voice of 0.8.
_HAPPY_VS_SURE_NEUTRAL = pytest.mark.xfail(strict=True, reason="espeak-ng's voice reads as happy in the fitting data "
                                           "(models/fusion/MODEL_CARD.md, Limits)")
_CASES = [(label, pa, pn) for label in EMOTIONS for pa, pn in [(0.6, 0.65), (0.9, 0.65), (0.8, 0.9)]]


@pytest.mark.parametrize("label,p_audio,p_neutral", [
    pytest.param(*c, marks=_HAPPY_VS_SURE_NEUTRAL) if c == ("happy", 0.8, 0.9) else c for c in _CASES])
def test_emotional_voice_with_confidently_neutral_words(shipped, label, p_audio, p_neutral):
    """The carrier-sentence case: the voice is right, the text model says neutral (on
    "kids are talking by the door" it says neutral 0.5-0.75)."""
    fused = shipped.proba(peaked(label, p_audio), peaked("neutral", p_neutral))
    assert LABELS[int(fused.argmax())] == label


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("voice", ["flat", "uniform"])
def test_flat_voice_with_emotional_words(shipped, flat_voice, label, voice):
    """Emotional words (text 0.85 on the label) in a voice that says little: the synthetic
    voice's average, or no opinion at all (uniform)."""
    audio = flat_voice if voice == "flat" else np.full(len(LABELS), 1 / len(LABELS))
    fused = shipped.proba(audio, peaked(label, 0.85))
    if label == "neutral" and voice == "uniform":
        # neutral words are absence of evidence, and the voice gives none: no answer to trust
        assert fused.max() < Config.load(ROOT / "config.toml").fusion.min_confidence or LABELS[int(fused.argmax())] == label
    elif label == "neutral" and audio.max() > 0.5:
        # The pooled audio model hears espeak-ng's voice as happy (its mean over the spoken
        # fitting sentences peaks above 0.5): that voice is not flat to it, and neutral words,
        # which are absence of evidence, do not outvote it. The answer is the text's or the voice's.
        assert LABELS[int(fused.argmax())] in (label, LABELS[int(audio.argmax())])
    else:
        assert LABELS[int(fused.argmax())] == label


def test_no_words_uses_the_voice(shipped):
    for label in LABELS:
        assert LABELS[int(shipped.proba(peaked(label, 0.8), None).argmax())] == label


def _one_sided_examples(rng: np.random.Generator, n: int = 70) -> Examples:
    """Synthetic branch outputs: an informative voice with neutral-leaning words, and an
    uninformative voice (always leaning the same way) with informative words."""
    parts = []
    y = rng.integers(0, len(LABELS), n)
    # informative voice: the right label 0.35-0.9 (wrong 20% of the time), text always ~neutral
    noisy = np.where(rng.random(n) < 0.2, rng.integers(0, len(LABELS), n), y)
    audio = np.array([peaked(LABELS[k], p) for k, p in zip(noisy, rng.uniform(0.35, 0.9, n))])
    text = np.array([peaked("neutral", p) for p in rng.uniform(0.4, 0.95, n)])
    parts.append(Examples.make(audio, text, y, np.arange(n) % 5, "voice+script"))
    # flat voice: neutral-leaning whatever is said; the words right 75% of the time
    y2 = rng.integers(0, len(LABELS), n)
    said = np.where(rng.random(n) < 0.25, rng.integers(0, len(LABELS), n), y2)
    audio2 = np.array([peaked("neutral", p) for p in rng.uniform(0.25, 0.5, n)])
    text2 = np.array([peaked(LABELS[k], p) for k, p in zip(said, rng.uniform(0.3, 0.9, n))])
    parts.append(Examples.make(audio2, text2, y2, np.arange(n) % 5, "flat-voice+words"))
    return Examples.concat(parts)


def test_fitting_on_one_sided_data_is_never_below_the_best_input():
    """The fitting code itself, on synthetic one-sided data: on fresh data of the same kind
    each part's UA reaches its better branch's, where the seed's fixed average does not."""
    model = fit_fusion(_one_sided_examples(np.random.default_rng(0), 150), 1e-2)
    fresh = _one_sided_examples(np.random.default_rng(1), 400)
    p = fused_proba(model, fresh)
    for part in ("voice+script", "flat-voice+words"):
        m = fresh.part == part
        best = max(ua(baseline(fresh, "audio")[m], fresh.y[m]), ua(baseline(fresh, "text")[m], fresh.y[m]))
        assert ua(p[m], fresh.y[m]) >= best - 0.02, part
    m = fresh.part == "voice+script"
    assert ua(baseline(fresh, "weighted")[m], fresh.y[m]) < ua(baseline(fresh, "audio")[m], fresh.y[m]) - 0.1


# --- the uncertain flag -----------------------------------------------------------------------
def test_uncertain_flag_follows_min_confidence():
    fuser = Fuser(FusionConfig(mode="confidence", min_confidence=0.5))
    assert fuser.is_uncertain(as_dict(peaked("angry", 0.45)))
    assert not fuser.is_uncertain(as_dict(peaked("angry", 0.55)))
    assert not Fuser(FusionConfig(mode="confidence", min_confidence=0.0)).is_uncertain(as_dict(np.full(7, 1 / 7)))


def test_shipped_threshold_is_the_fitted_one(shipped):
    """config.toml's min_confidence is the one ser-train-fusion chose for the shipped model."""
    cfg = Config.load(ROOT / "config.toml").fusion
    assert cfg.mode == "learned" and cfg.model_path == SHIPPED
    assert cfg.min_confidence == pytest.approx(shipped.min_confidence)
    assert cfg.min_confidence > 0
    # a silent window (uniform audio, no words) is uncertain
    fuser = Fuser(cfg)
    assert fuser.is_uncertain(fuser.fuse(as_dict(np.full(7, 1 / 7)), None))


def test_fuser_and_fuse_agree_and_are_fast():
    cfg = FusionConfig()
    fuser = Fuser(cfg)
    a, t = as_dict(peaked("angry", 0.7)), as_dict(peaked("neutral", 0.9))
    assert fuser.fuse(a, t) == pytest.approx(fuse(a, t, cfg))
    assert sum(fuser.fuse(a, None).values()) == pytest.approx(1.0)
    # Its speed is measured by bench/live_bench.py (fusion_ms), not here. Repeated calls give
    # exactly the same result and leave the inputs alone (no state carried between windows).
    a_before, t_before = dict(a), dict(t)
    first = fuser.fuse(a, t)
    for _ in range(200):
        assert fuser.fuse(a, t) == first
    assert a == a_before and t == t_before


def test_seed_modes_stay_available():
    a, t = as_dict(peaked("angry", 0.7)), as_dict(peaked("happy", 1.0))
    w = fuse(a, t, FusionConfig(mode="weighted"))
    assert w["happy"] == pytest.approx(0.4 * a["happy"] + 0.6 * 1.0)
    assert Fuser(FusionConfig(mode="confidence")).model is None


# --- configuration and the model folder ------------------------------------------------------------
@pytest.mark.parametrize("raw,fragment", [
    ({"mode": "stacked"}, "[fusion] mode: must be one of learned, confidence, weighted"),
    ({"mode": "learned", "model_dir": " "}, "[fusion] model_dir"),
    ({"min_confidence": 1.0}, "[fusion] min_confidence"),
    ({"min_confidence": -0.1}, "[fusion] min_confidence"),
    ({"uncertain_weight": 2.0}, "[fusion] uncertain_weight"),
    ({"model_dir": 3}, "[fusion] model_dir: expected str"),
])
def test_fusion_config_validation(raw, fragment):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"fusion": raw})
    assert fragment in str(err.value)


def test_default_is_learned_with_the_shipped_folder():
    cfg = FusionConfig()
    assert cfg.mode == "learned" and cfg.model_path == SHIPPED
    assert FusionConfig(model_dir="/abs/fusion").model_path.as_posix() == "/abs/fusion"


def test_missing_model_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="ser-train-fusion") as err:
        Fuser(FusionConfig(model_dir=str(tmp_path / "nowhere")))
    assert "does not exist" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no params.json"):
        Fuser(FusionConfig(model_dir=str(tmp_path / "empty")))


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "ser-fusion"}), "[]"])
def test_corrupt_model_is_one_clear_error(tmp_path, content):
    folder = tmp_path / f"bad{abs(hash(content))}"
    folder.mkdir()
    (folder / "params.json").write_text(content)
    with pytest.raises(ModelError, match="corrupt.*ser-train-fusion"):
        Fuser(FusionConfig(model_dir=str(folder)))


def test_params_round_trip(shipped, tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(shipped.to_json()))
    again = LearnedFusion.load(tmp_path)
    a, t = peaked("fear", 0.6), peaked("neutral", 0.8)
    assert again.proba(a, t) == pytest.approx(shipped.proba(a, t), abs=1e-5)
