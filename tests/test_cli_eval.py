"""ser-eval on a folder it has never seen, in other corpora's layouts."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from streamer.audio.io import load_audio
from streamer.config import ROOT


def run_eval(*args):
    return subprocess.run([sys.executable, "-m", "streamer.cli.eval", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_eval_unseen_folder_in_other_layouts(tmp_path, ravdess, speech_wav, audio_model):
    folder = tmp_path / "calls"
    (folder / "emodb").mkdir(parents=True)
    (folder / "crema").mkdir()
    sources = {  # RAVDESS actor 19 clips renamed into EmoDB and CREMA-D layouts; 44.1 kHz and stereo on purpose
        "emodb/03a01Wa.wav": ("Actor_19/03-01-05-02-01-01-19.flac", 44100, 1),
        "emodb/03a02Fb.wav": ("Actor_19/03-01-03-02-01-01-19.flac", 16000, 2),
        "emodb/03a04Lc.wav": ("Actor_19/03-01-01-01-01-01-19.flac", 16000, 1),  # boredom: skipped, counted
        "crema/1001_DFA_SAD_XX.wav": ("Actor_19/03-01-04-02-01-01-19.flac", 22050, 1),
    }
    for name, (src, rate, channels) in sources.items():
        x = load_audio(ravdess / src, target_rate=rate)
        sf.write(folder / name, np.stack([x] * channels, axis=1) if channels == 2 else x, rate)
    sf.write(folder / "crema" / "1002_IEO_NEU_XX.wav", load_audio(speech_wav), 16000)
    (folder / "crema" / "1003_IEO_ANG_HI.wav").write_bytes(b"RIFF\x00\x00garbage")  # corrupt: skipped, counted
    out = tmp_path / "report.json"
    res = run_eval(folder, "--json", out, "--png", tmp_path / "cm.png")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert set(report["overall"]) >= {"ua", "wa", "macro_f1", "ece", "n", "skipped"}
    assert report["overall"]["n"] == 4
    assert report["overall"]["skipped"] == 2
    assert set(report["per_corpus"]) == {"emodb", "crema-d"}
    assert report["per_corpus"]["emodb"]["n"] == 2
    assert len(report["confusion"]["matrix"]) == 7 and report["confusion"]["labels"][0] == "angry"
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_missing_folder_is_one_clear_line(tmp_path):
    res = run_eval(tmp_path / "nowhere", "--json", tmp_path / "r.json")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "error:" in res.stderr and "nowhere" in res.stderr


def test_eval_folder_without_corpus_names(tmp_path):
    sf.write(tmp_path / "meeting.wav", np.zeros(16000, np.float32), 16000)
    res = run_eval(tmp_path, "--json", tmp_path / "r.json")
    assert res.returncode == 2 and "supported corpus layout" in res.stderr
