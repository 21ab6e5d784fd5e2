"""Utterance records and first words with the real recogniser (Whisper tiny.en) and models:
the pipeline as ``ser-live --file --fast`` runs it."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from streamer.runtime.config import Config
from streamer.core.paths import CHECKOUT as ROOT
from streamer.core.labels import EMOJI, LABELS
from streamer.text.normalize import asr_style

pytestmark = pytest.mark.slow

SENTENCES = ["Yesterday the weather was wonderful and we walked along the river for hours.",
             "Please call me back tomorrow morning because the invoice is wrong.",
             "Nobody told me the meeting was cancelled and I am furious."]


def espeak(tmp_path, text, name):
    raw, out = tmp_path / f"{name}.raw.wav", tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out


def speech_file(tmp_path, lead, gap=1.2):
    """The sentences one after another, ``lead`` s of silence before the first, ``gap`` s between."""
    import soundfile as sf

    parts = []
    for k, text in enumerate(SENTENCES):
        x, _ = sf.read(str(espeak(tmp_path, text, f"s{k}")), dtype="int16")
        loud = np.flatnonzero(np.abs(x) > 300)
        parts += [np.zeros(int((lead if k == 0 else gap) * 16000), np.int16), x[loud[0]: loud[-1] + 1]]
    path = tmp_path / f"lead{lead}.wav"
    sf.write(str(path), np.concatenate(parts + [np.zeros(8000, np.int16)]), 16000, subtype="PCM_16")
    return path


def analyse(path, models, cfg=None):
    """Records of one file through the pipeline, as ``ser-live --file --fast`` writes them."""
    from streamer.runtime.streams import open_stream
    from streamer.live.sources import FileSource

    cfg = cfg or Config.load()
    records = []
    pipe = open_stream(cfg, models, FileSource(path, fast=True), [lambda r: records.append(r.to_record())],
                       block_when_full=True)
    summary = pipe.run(threading.Event())
    assert summary["error"] is None
    return [r for r in records if r["type"] == "window"], [r for r in records if r["type"] == "utterance"]


def check_utterance_contract(windows, utterances):
    by_index = {w["index"]: w for w in windows}
    assert sorted(i for u in utterances for i in u["windows"]) == sorted(by_index)  # every window in one utterance
    for k, u in enumerate(utterances):
        assert u["index"] == k and u["start_s"] <= u["end_s"]
        mine = [by_index[i] for i in u["windows"]]
        assert all(w["utterance"] == u["index"] for w in mine)
        assert u["start_s"] == mine[0]["start_s"] and u["end_s"] >= mine[-1]["end_s"]
        assert u["transcript"] == " ".join(x["word"] for x in u["words"])
        starts = [x["start_s"] for x in u["words"]]
        assert starts == sorted(starts)
        for a, b in zip(u["words"], u["words"][1:]):  # no word given twice
            assert not (a["word"] == b["word"] and b["start_s"] < a["end_s"]), u["transcript"]
        for kind in ("audio", "fused"):
            assert abs(sum(u["probs"][kind].values()) - 1) < 1e-4
        assert (u["probs"]["text"] is None) == (not u["words"])
        assert u["label"] == max(u["probs"]["fused"], key=u["probs"]["fused"].get) and u["emoji"] == EMOJI[u["label"]]
        assert isinstance(u["uncertain"], bool) and set(u["dims"]) == {"audio", "text", "fused"}
        for branch, d in u["dims"].items():
            assert (d is None) == (branch == "text" and u["probs"]["text"] is None)
            if d is not None:
                assert set(d) == {"arousal", "valence"} and all(-1 <= v <= 1 for v in d.values())
    for w in windows:
        assert w["label"] == max(w["probs"]["fused"], key=w["probs"]["fused"].get)
        assert w["rolling_label"] == max(w["probs"]["rolling"], key=w["probs"]["rolling"].get)
        assert w["label"] in LABELS and set(w["dims"]) == {"audio", "text", "fused"}


@pytest.mark.parametrize("lead", [0.0, 0.3, 1.0])
def test_utterances_keep_the_first_word(tmp_path, models, lead):
    windows, utterances = analyse(speech_file(tmp_path, lead), models)
    check_utterance_contract(windows, utterances)
    assert len(utterances) == len(SENTENCES)  # one per sentence: the VAD closes each at its pause
    for u, text in zip(utterances, SENTENCES):
        script = asr_style(text).split()
        assert u["words"] and u["words"][0]["word"] == script[0], (lead, u["transcript"])
        heard = set(u["transcript"].split())
        assert sum(w in heard for w in script) >= 0.7 * len(script), u["transcript"]
    # The first window has words of its own (decoded as it closed, from truncated audio, it may
    # mishear espeak-ng's first word where the utterance's whole decode does not).
    first = min(windows, key=lambda w: w["index"])
    assert first["words"] and first["words"][0]["start_s"] <= first["start_s"] + 0.5


@pytest.mark.corpus("real recorded speech whose scripts are known: RAVDESS statements, TESS carrier phrases")
def test_real_scripts_keep_the_first_word(models, whisper, ravdess, tess):
    """RAVDESS statements ("kids are talking by the door", "dogs are sitting by the door") and
    TESS carrier phrases ("say the word ..."): where Whisper decoding the whole clip at its full
    30 s input hears the script's first word, the utterance keeps it too."""
    from streamer.asr.decode import WhisperAsrConfig, decode
    from streamer.audio.io import load_audio

    clips = sorted((ravdess / "Actor_19").glob("03-01-0[15]-0[12]-0[12]-0[12]-19.*"))[::2][:4]
    clips += sorted(tess.rglob("YAF_*_neutral.*"))[:2] + sorted(tess.rglob("OAF_*_sad.*"))[:2]
    checked = 0
    for clip in clips:
        first = "say" if clip.stem.startswith(("YAF", "OAF")) else ("kids" if clip.stem.split("-")[4] == "01" else "dogs")
        reference = [asr_style(w[0]) for w in decode(whisper, load_audio(clip), WhisperAsrConfig(encode_s=30))]
        windows, utterances = analyse(clip, models)
        check_utterance_contract(windows, utterances)
        if reference and reference[0] == first:
            checked += 1
            assert utterances and utterances[0]["words"] and utterances[0]["words"][0]["word"] == first, (clip.name, utterances)
    assert checked >= 5  # tiny.en hears most of these scripts


def test_cli_json_prints_utterances_and_keeps_the_first_word(tmp_path):
    path = speech_file(tmp_path, 0.0)
    res = subprocess.run([sys.executable, "-m", "streamer.cli.live", "--file", str(path), "--fast", "--json",
                          "--log", str(tmp_path / "s.ndjson")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    utterances = [r for r in records if r["type"] == "utterance"]
    assert len(utterances) == len(SENTENCES) and utterances[0]["transcript"].split()[0] == "yesterday"
    check_utterance_contract([r for r in records if r["type"] == "window"], utterances)


def test_noise_that_passes_the_vad_comes_out_uncertain(tmp_path, models):
    """White noise loud enough for the VAD: no words, and every window and utterance uncertain."""
    import soundfile as sf

    rng = np.random.default_rng(3)
    path = tmp_path / "noise.wav"
    sf.write(str(path), np.clip(rng.normal(0, 0.3, 6 * 16000), -1, 1).astype(np.float32), 16000, subtype="PCM_16")
    windows, utterances = analyse(path, models)
    assert windows and utterances
    for r in windows + utterances:
        assert r["uncertain"] and not r["words"], r
