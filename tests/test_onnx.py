"""The exported models on onnxruntime give what the torch networks give (issue 27), and the
main job runs without torch.

- text: ``models/text-emotion/model.onnx`` (weights filled in from the base encoder, the
  fine-tuned tensors and the heads) against the torch network, on real sentences;
- audio: ``models/audio-emotion-network/model.onnx`` against the torch network, on real
  speech windows;
- batch equals single for both; the shipped loaders pick the export; a process that loads
  the default models never imports torch, transformers or librosa.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.io import load_audio

ROOT = Path(__file__).resolve().parent.parent
TEXT_DIR = ROOT / "models" / "text-emotion"
NETWORK_DIR = ROOT / "models" / "audio-emotion-network"

SENTENCES = ["i can't believe you did that to me, this is outrageous", "oh wow, what a lovely surprise",
             "i'm scared something terrible will happen", "the meeting is at three o'clock", "that smell is revolting",
             "i miss her so much, i can't stop crying", "yes", "thank you so much for your help, you made my day",
             "why does this keep happening every single time i call", ""]


@pytest.fixture(scope="module")
def text_pair():
    pytest.importorskip("torch", reason="the torch network to compare with comes with the train extra")
    from streamer.text.torch_text import EmbeddedTextEmotion
    from streamer.text.onnx_text import OnnxTextEmotion

    return OnnxTextEmotion.load(TEXT_DIR), EmbeddedTextEmotion.load(TEXT_DIR, compiled=False)


def test_onnx_text_model_equals_torch(text_pair):
    onnx_model, torch_model = text_pair
    p_onnx, has_onnx = onnx_model.predict_proba(SENTENCES)
    p_torch, has_torch = torch_model.predict_proba(SENTENCES)
    assert (has_onnx == has_torch).all() and not has_onnx[-1]  # empty text: no opinion from either
    assert np.abs(p_onnx - p_torch).max() <= 1e-3
    d_onnx, d_torch = onnx_model.predict_dims(SENTENCES[:-1]), torch_model.predict_dims(SENTENCES[:-1])
    assert d_onnx is not None and np.abs(d_onnx - d_torch).max() <= 1e-3
    assert [max(p, key=p.get) for p in onnx_model.predict_batch(SENTENCES[:-1])] == \
           [max(p, key=p.get) for p in torch_model.predict_batch(SENTENCES[:-1])]


def test_onnx_text_batch_equals_single(text_pair):
    onnx_model, _ = text_pair
    batch, _ = onnx_model.predict_proba(SENTENCES[:-1])
    single = np.stack([onnx_model.predict_proba([s])[0][0] for s in SENTENCES[:-1]])
    assert np.abs(batch - single).max() <= 1e-5


def test_the_export_check_is_recorded_beside_the_model():
    meta = json.loads((TEXT_DIR / "model.onnx.json").read_text())
    assert meta["check"]["max_abs_prob_diff"] <= 1e-3
    assert meta["exported_by"].startswith("python -m streamer.train.export text")
    assert (TEXT_DIR / "model.onnx").stat().st_size < 2_000_000  # the graph only: the weights are not copied


def test_a_missing_weight_file_is_a_clear_error(tmp_path):
    import shutil

    from streamer.core.errors import ModelError
    from streamer.text.onnx_text import OnnxTextEmotion

    copy = tmp_path / "text-emotion"
    shutil.copytree(TEXT_DIR, copy)
    (copy / "head.safetensors").unlink()
    with pytest.raises(ModelError, match="head.safetensors is missing: export the text model again"):
        OnnxTextEmotion.load(copy)


@pytest.fixture(scope="module")
def audio_pair(whisper):
    pytest.importorskip("torch", reason="the torch network to compare with comes with the train extra")
    from streamer.audio.emotion import AudioEmotion
    from streamer.audio.onnx_net import OnnxAudioEmotion

    if not (NETWORK_DIR / "model.onnx").is_file():
        pytest.fail(f"{NETWORK_DIR}/model.onnx is missing: python -m streamer.train.export audio {NETWORK_DIR}")
    return OnnxAudioEmotion.load(NETWORK_DIR, whisper), AudioEmotion.load(NETWORK_DIR, whisper)


def test_onnx_audio_network_equals_torch(audio_pair, speech_wav):
    onnx_model, torch_model = audio_pair
    x = load_audio(speech_wav)
    clips = [x, x[: len(x) // 2], np.concatenate([x, x])[: 3 * 16000]]
    p_onnx, p_torch = onnx_model.predict_proba_batch(clips), torch_model.predict_proba_batch(clips)
    assert np.abs(p_onnx - p_torch).max() <= 1e-3
    single = np.stack([onnx_model.predict_proba(c) for c in clips])
    assert np.abs(single - p_onnx).max() <= 1e-5  # batch equals single


def test_the_loaders_pick_the_exports(whisper):
    from streamer.audio.load import load_audio_model
    from streamer.audio.onnx_net import OnnxAudioEmotion
    from streamer.text.load import load_text_emotion
    from streamer.text.onnx_text import OnnxTextEmotion

    assert isinstance(load_text_emotion(), OnnxTextEmotion)
    assert isinstance(load_audio_model(NETWORK_DIR, whisper), OnnxAudioEmotion)


def test_the_main_job_runs_without_torch():
    """Loading the default models and scoring a window and a sentence imports none of the
    training libraries (they are the train extra)."""
    code = ("import sys, numpy as np\n"
            "from streamer.runtime.config import Config\n"
            "from streamer.runtime.models import load_models\n"
            "m = load_models(Config.load(), with_asr=False)\n"
            "x = (0.1 * np.sin(np.arange(40000) / 8)).astype(np.float32)\n"
            "m.audio.predict(x); m.text.predict('what a lovely day')\n"
            "print(sorted(k for k in ('torch', 'transformers', 'librosa', 'peft') if k in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
