import numpy as np
import pytest
import torch

from streamer.audio.emotion import AudioEmotion
from streamer.audio.windows import encode_window
from streamer.audio.prepare import SilentAudio
from streamer.audio.io import load_audio, resample
from streamer.core.errors import AudioInputError, ModelError
from streamer.core.labels import LABELS


@pytest.fixture(scope="module")
def clip(angry_wav):
    return load_audio(angry_wav)  # about 5 s of angry-sounding speech (conftest.ANGRY_VOICE)


def test_probabilities_sum_to_one_and_are_deterministic(audio_model, clip):
    a = audio_model.predict(clip)
    b = audio_model.predict(clip)
    assert list(a) == list(LABELS)
    assert sum(a.values()) == pytest.approx(1.0, abs=1e-5)
    assert a == b
    again = AudioEmotion.load(audio_model_dir(), audio_model.whisper).predict(clip)
    assert again == a


def audio_model_dir():
    from streamer.audio.emotion import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR


def test_batch_equals_single(audio_model, clip, speech_wav):
    speech = load_audio(speech_wav)
    batch = audio_model.predict_batch([clip, speech])
    for single, x in zip(batch, [clip, speech]):
        ref = audio_model.predict(x)
        assert max(abs(single[k] - ref[k]) for k in LABELS) < 1e-4


@pytest.mark.parametrize("bad,error", [
    (np.zeros(0, np.float32), AudioInputError),
    (np.full(16000, np.nan, np.float32), AudioInputError),
    (np.zeros(16000, np.float32), SilentAudio),
    (np.zeros((2, 2, 100), np.float32), AudioInputError),
])
def test_bad_input_raises_clear_errors(audio_model, bad, error):
    with pytest.raises(error):
        audio_model.predict(bad)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_sample_rates_are_resampled(audio_model, clip, rate):
    ref = audio_model.predict_proba(clip)
    got = audio_model.predict_proba(resample(clip, 16000, rate), rate)
    assert np.isfinite(got).all() and got.sum() == pytest.approx(1.0, abs=1e-5)
    if rate > 16000:  # nothing above 8 kHz is lost: nearly the same answer
        assert np.abs(got - ref).max() < 0.1


def test_stereo_and_int16_match_mono(audio_model, clip):
    ref = audio_model.predict_proba(clip)
    stereo = np.stack([clip, clip], axis=1)  # (frames, channels)
    assert np.abs(audio_model.predict_proba(stereo) - ref).max() < 1e-5
    assert np.abs(audio_model.predict_proba(stereo.T) - ref).max() < 1e-5  # (channels, frames)
    pcm = np.round(clip * 32767).astype(np.int16)
    assert np.abs(audio_model.predict_proba(pcm) - ref).max() < 0.02


def test_level_does_not_change_the_answer(audio_model, clip):
    a = audio_model.predict_proba(clip)
    b = audio_model.predict_proba(clip * 0.1)  # 20 dB quieter
    assert np.abs(a - b).max() < 0.02


def test_long_audio_is_windowed(network_model, clip, speech_wav):
    speech = load_audio(speech_wav)
    long = np.concatenate([speech] * 4)  # ~10 s of speech: several live windows
    items = network_model.window_inputs(network_model.prepare_audio(long, 16000))
    assert len(items) >= 3
    assert network_model.predict_proba(long).sum() == pytest.approx(1.0, abs=1e-5)


def test_encode_window_shapes(whisper, clip):
    item = encode_window(whisper, clip[:40000])
    assert item.whisper.shape == (151, 384) and item.prosody.shape == (151, 18)  # 2.5 s + 0.5 s tail
    assert encode_window(None, clip[:8000]).whisper.shape == (26 + 25, 384)


def test_missing_model_folder(tmp_path, whisper):
    with pytest.raises(ModelError, match="ser-train"):
        AudioEmotion.load(tmp_path, whisper)
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "labels.json").write_text("[]")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ModelError):
        AudioEmotion.load(tmp_path, whisper)


def test_threads_untouched(network_model, clip):
    before = torch.get_num_threads()
    network_model.predict(clip)
    assert torch.get_num_threads() == before


def test_traced_network_matches_eager(network_model):
    torch.manual_seed(0)
    for t, lengths in ((20, [20]), (151, [151, 90, 31]), (176, [176, 12])):
        b = len(lengths)
        args = (torch.randn(b, 384, t), torch.randn(b, 18, t), torch.tensor(lengths))
        with torch.inference_mode():
            assert torch.allclose(network_model._forward(*args), network_model.net(*args), atol=1e-5)


def test_a_click_in_silence_is_silent_not_an_error(audio_model):
    from streamer.audio.prepare import SilentAudio

    x = np.zeros(40000, np.float32)
    x[20000] = 0.0004  # peak above -70 dBFS, but no 20 ms frame above -90 dB: nothing left after trimming
    with pytest.raises(SilentAudio):
        audio_model.predict(x)


def _random_head(net_config, seed=0, scale=0.5):
    from streamer.audio.linear import LinearHead

    d = 2 * (net_config.whisper_dim + net_config.prosody_dim)
    rng = np.random.default_rng(seed)
    return LinearHead(np.zeros(d, np.float32), np.ones(d, np.float32),
                      rng.normal(0, scale, (len(LABELS), d)).astype(np.float32), np.zeros(len(LABELS), np.float32))


def test_linear_blend_loads_changes_the_output_and_batches(network_model, clip, speech_wav, tmp_path):
    from streamer.audio.emotion import save_model

    head = _random_head(network_model.net.config)
    save_model(network_model.net, tmp_path, network_model.temperature, head, 0.5)
    blended = AudioEmotion.load(tmp_path, network_model.whisper)
    assert blended.linear is not None and blended.linear_weight == 0.5
    speech = load_audio(speech_wav)
    net_only = AudioEmotion(network_model.net, network_model.temperature, network_model.whisper)
    a, b = blended.predict_proba(clip), net_only.predict_proba(clip)
    assert a.sum() == pytest.approx(1.0, abs=1e-5) and np.abs(a - b).max() > 0.01  # the head is used
    for single, x in zip(blended.predict_batch([clip, speech]), [clip, speech]):
        ref = blended.predict(x)
        assert max(abs(single[k] - ref[k]) for k in LABELS) < 1e-4
    # weight 0 is the network alone; the blend is the weighted mean of both heads' logits
    save_model(network_model.net, tmp_path, network_model.temperature, head, 0.0)
    assert np.abs(AudioEmotion.load(tmp_path, network_model.whisper).predict_proba(clip) - b).max() < 1e-6
    items = blended.window_inputs(blended.prepare_audio(clip, 16000))
    from streamer.audio.linear import pooled_stats

    lin = head.logits(pooled_stats([i.whisper for i in items], [i.prosody for i in items]))
    net = net_only.window_logits(items).numpy()
    assert np.allclose(blended.window_logits(items).numpy(), 0.5 * net + 0.5 * lin, atol=1e-4)


def test_blend_folder_without_its_linear_file(network_model, tmp_path):
    from streamer.audio.emotion import save_model

    save_model(network_model.net, tmp_path, 1.0, _random_head(network_model.net.config), 0.3)
    (tmp_path / "linear.npz").unlink()
    with pytest.raises(ModelError, match="linear.npz"):
        AudioEmotion.load(tmp_path, network_model.whisper)


# --- the shipped pooled-statistics model --------------------------------------------------

def test_shipped_model_needs_no_torch_to_run():
    """The pooled model runs on numpy and CTranslate2 alone."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from streamer.audio.pooled import PooledEmotion; "
            "from streamer.core.paths import model_dir; m = PooledEmotion.load(model_dir('audio-emotion')); "
            "t = np.arange(32000) / 16000; p = m.predict_proba((0.1 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)); "
            "assert abs(p.sum() - 1) < 1e-5; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=audio_model_dir().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_pooled_rows_follow_the_live_windows(audio_model, clip, speech_wav):
    if getattr(audio_model, "kind", None) != "pooled":
        pytest.skip("the shipped model is not the pooled kind")
    long = np.concatenate([clip, load_audio(speech_wav), clip])
    rows, frames = audio_model.rows(audio_model.prepare_audio(long, 16000))
    assert rows.shape == (len(frames), audio_model.head.prior.mean.shape[1]) and len(frames) >= 3
    assert frames.max() <= 176 and frames.min() >= 26  # 0.5-3 s windows plus 0.5 s of silence


def test_stream_statistics_adapt_and_are_reset(audio_model, clip, speech_wav):
    """A stream's windows standardise its later windows; another stream, or none, is not
    touched; the stream's answers are the service's stateless scores taken in order."""
    if getattr(audio_model, "kind", None) != "pooled":
        pytest.skip("the shipped model is not the pooled kind")
    import pickle

    speech = load_audio(speech_wav)
    fresh = audio_model.predict_proba(clip)
    a, b = audio_model.stream(), audio_model.stream()
    first = audio_model.predict_proba(clip, stream=a)
    assert np.abs(first - fresh).max() < 1e-5  # no history yet: the training prior
    scored = audio_model.score(speech)
    for _ in range(30):
        a.probs(scored)
    adapted = audio_model.predict_proba(clip, stream=a)
    assert np.abs(adapted - fresh).max() > 0.01  # 30 windows of another voice moved the statistics
    assert np.abs(audio_model.predict_proba(clip, stream=b) - fresh).max() < 1e-5
    batch = audio_model.score_batch([clip, speech])  # batch equals single, and holds no state
    assert np.array_equal(batch[0].rows, audio_model.score(clip).rows)
    remote = pickle.loads(pickle.dumps(audio_model.stream_factory()))()  # what a Ray gateway gets
    got = remote.probs(audio_model.score(clip))
    assert max(abs(got[k] - float(fresh[i])) for i, k in enumerate(LABELS)) < 1e-5
    a.reset()
    assert np.abs(audio_model.predict_proba(clip, stream=a) - fresh).max() < 1e-5


def test_noise_unlike_any_training_row_gets_no_confident_answer(audio_model, clip):
    """White noise loud enough to pass for a window sits far from every training row: its
    answer is damped to below the uncertain threshold, while speech keeps its confidence."""
    if getattr(audio_model, "kind", None) != "pooled":
        pytest.skip("the shipped model is not the pooled kind")
    from streamer.runtime.config import Config
    from streamer.core.paths import data_path

    threshold = Config.load(data_path("config.toml")).fusion.min_confidence
    rng = np.random.default_rng(3)
    noise = np.clip(rng.normal(0, 0.3, 6 * 16000), -1, 1).astype(np.float32)
    assert audio_model.head.ood_ref > 0
    assert audio_model.predict_proba(noise).max() < threshold
    rows, _ = audio_model.rows(audio_model.prepare_audio(clip, 16000))
    z = audio_model.head.prior
    d = ((((rows - z.mean) / (z.std + 1e-3)) ** 2).mean(1))
    assert (d < audio_model.head.ood_ref * 2).all()  # real speech is not damped much
