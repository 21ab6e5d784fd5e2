"""ser-eval on a folder it has never seen, in other corpora's layouts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.audio.io import load_audio
from streamer.core.paths import CHECKOUT as ROOT
from tests.conftest import espeak

# RAVDESS's two statements, each in voices of its own (espeak-ng): clips to rename into other
# corpora's layouts and manifests (the labels come from the names and manifests, not the voices).
SAID = [("kids are talking by the door", "en-us+m3"), ("dogs are sitting by the door", "en-us+f2"),
        ("kids are talking by the door", "en-gb"), ("dogs are sitting by the door", "en-us+f4"),
        ("kids are talking by the door", "en-us+m7")]


def said(folder: Path, k: int, rate: int = 16000) -> np.ndarray:
    """Clip ``k`` of ``SAID`` (about 2 s), at ``rate`` Hz."""
    folder.mkdir(parents=True, exist_ok=True)
    return load_audio(espeak(folder / f"said{k}.wav", *SAID[k]), target_rate=rate)


def run_eval(*args):
    return subprocess.run([sys.executable, "-m", "streamer.cli.eval", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_eval_unseen_folder_in_other_layouts(tmp_path, speech_wav, audio_model):
    folder = tmp_path / "calls"
    (folder / "emodb").mkdir(parents=True)
    (folder / "crema").mkdir()
    sources = {  # speech renamed into EmoDB and CREMA-D layouts; 44.1 kHz and stereo on purpose
        "emodb/03a01Wa.wav": (0, 44100, 1),
        "emodb/03a02Fb.wav": (1, 16000, 2),
        "emodb/03a04Lc.wav": (2, 16000, 1),  # boredom: skipped, counted
        "crema/1001_DFA_SAD_XX.wav": (3, 22050, 1),
    }
    for name, (k, rate, channels) in sources.items():
        x = said(tmp_path / "said", k, rate)
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


# --- --manifest: any labelled folder, whatever its file names ---------------------------------

def write_said(tmp_path, k, dest):
    """Clip ``k`` of ``SAID``, written under a new name."""
    x = said(tmp_path / "said", k)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dest, x, 16000)


@pytest.mark.slow
def test_eval_manifest_csv_and_tsv_with_arbitrary_names(tmp_path, audio_model):
    data = tmp_path / "my recordings"
    write_said(tmp_path, 0, data / "monday" / "call 1.wav")   # labelled angry below
    write_said(tmp_path, 1, data / "b.flac")                  # neutral
    write_said(tmp_path, 2, tmp_path / "elsewhere" / "x.wav")  # happy
    write_said(tmp_path, 3, data / "sad one.wav")              # sad
    (data / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    write_said(tmp_path, 4, tmp_path / "corpus" / "03-01-02-01-01-01-18.wav")  # calm, by its RAVDESS-style name
    (data / "calls.csv").write_text(
        "path,label,speaker\n"
        "monday/call 1.wav,anger,ann\n"
        "b.flac,calm,ann\n"
        "b.flac,boredom,ann\n"
        "b.flac,Boredom,bo\n"
        "monday/missing.wav,sad,bo\n"
        "broken.wav,happy,bo\n")
    (data / "more.tsv").write_text(f"label\tpath\njoy\t{tmp_path / 'elsewhere' / 'x.wav'}\nsadness\tsad one.wav\nsarcasm\tb.flac\n")
    (tmp_path / "happy_only.tsv").write_text("path\tlabel\nelsewhere/x.wav\thappy\n")
    out = tmp_path / "report.json"
    res = run_eval(tmp_path / "corpus", "--manifest", data / "calls.csv", "--manifest", data / "more.tsv",
                   "--manifest", tmp_path / "happy_only.tsv", "--json", out)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    o = report["overall"]
    assert o["n"] == 2 + 2 + 1 + 1 and o["skipped"] == 2 + 1 + 1 + 1  # boredom x2, missing, broken, sarcasm
    assert set(report["per_corpus"]) == {"calls", "more", "happy_only", "ravdess"}
    assert {k: report["per_corpus"][k]["n"] for k in report["per_corpus"]} == {"calls": 2, "more": 2, "happy_only": 1, "ravdess": 1}
    assert report["skipped_reasons"]["manifest: unknown label: boredom"] == 1
    assert report["skipped_reasons"]["manifest: unknown label: Boredom"] == 1
    assert report["skipped_reasons"]["manifest: missing audio file"] == 1
    assert report["skipped_reasons"]["AudioInputError"] == 1
    calls, more, happy_only = report["manifests"]
    assert calls["unknown_labels"] == {"boredom": 1, "Boredom": 1} and calls["missing_files"] == 1 and calls["rows"] == 6
    assert more["unknown_labels"] == {"sarcasm": 1} and more["clips"] == 2
    for rep in (o, report["per_corpus"]["calls"], report["per_corpus"]["more"]):
        assert set(rep) >= {"ua", "wa", "macro_f1", "ece", "arousal_bacc"}
        assert 0.0 <= rep["arousal_bacc"] <= 1.0
    assert report["per_corpus"]["happy_only"]["arousal_bacc"] is None  # no neutral/sad clip
    calls_rep = report["per_corpus"]["calls"]  # angry + neutral: the argmax chooses between those two only
    assert calls_rep["labels_present"] == ["angry", "neutral"]
    assert calls_rep["ua_present"] >= calls_rep["ua"]
    assert report["per_corpus"]["happy_only"]["ua_present"] == 1.0  # one label: always right
    assert "UA over its 2 labels" in res.stdout
    assert report["per_corpus"]["ravdess"]["arousal_bacc"] is None     # calm only
    assert "arousal bAcc" in res.stdout and "sarcasm 1" in res.stdout


@pytest.mark.parametrize("text, words", [
    ("file,emotion\nx.wav,angry\n", "no 'path' or 'label' column"),
    ("path,emotion\nx.wav,angry\n", "no 'label' column"),
    ("", "is empty"),
    ("path\tlabel\n", "no rows"),
])
def test_eval_malformed_manifest_is_one_clear_line(tmp_path, text, words):
    (tmp_path / "m.csv").write_text(text)
    res = run_eval("--manifest", tmp_path / "m.csv", "--json", tmp_path / "r.json")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "error:" in res.stderr and words in res.stderr
    assert "path,label" in res.stderr or "row per clip" in res.stderr
    assert not (tmp_path / "r.json").exists()


def test_eval_manifest_without_usable_clips(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "m.tsv").write_text("path\tlabel\na.wav\tboredom\nnot-here.wav\tangry\n")
    res = run_eval("--manifest", tmp_path / "m.tsv", "--json", tmp_path / "r.json")
    assert res.returncode == 2 and "no usable clips" in res.stderr and "relative to the manifest" in res.stderr


def test_eval_needs_paths_or_manifest(tmp_path):
    res = run_eval("--json", tmp_path / "r.json")
    assert res.returncode == 2 and "--manifest" in res.stderr


def test_arousal_bacc_on_constructed_predictions():
    from collections import Counter

    from streamer.core.labels import INDEX, LABELS
    from streamer.train.corpora import Clip
    from streamer.train.evaluate import Predictions, add_arousal, eval_report
    from streamer.train.metrics import arousal_bacc

    def p(**kw):
        return [kw.get(k, 0.0) for k in LABELS]

    rows = [  # (true label, probabilities, corpus)
        ("angry", p(angry=0.9, sad=0.1), "a"),          # aroused: right
        ("happy", p(happy=0.5, neutral=0.5), "a"),      # arousal 0.6*0.5 - 0.3*0.5 > 0: right
        ("happy", p(sad=0.6, happy=0.4), "a"),          # -0.36 + 0.24 < 0: wrong
        ("neutral", p(neutral=1.0), "a"),               # calm: right
        ("sad", p(surprise=0.5, sad=0.5), "a"),         # 0.35 - 0.3 > 0: wrong
        ("sad", p(sad=1.0), "a"),                       # right
        ("fear", p(neutral=1.0), "a"),                  # ignored
        ("surprise", p(sad=1.0), "b"),                  # ignored: corpus b has neither side
        ("angry", p(angry=1.0), "c"),                   # c has only the aroused side
    ]
    probs = np.array([r[1] for r in rows])
    y = [INDEX[r[0]] for r in rows]
    # aroused side 2 of 3 right, calm side 2 of 3 right
    assert arousal_bacc(probs[:7], y[:7]) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert arousal_bacc(probs, y) == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert arousal_bacc(probs[[0, 3]], [y[0], y[3]]) == 1.0
    assert arousal_bacc(probs[[3, 0]], [y[0], y[3]]) == 0.0  # each read as the other side
    assert arousal_bacc(probs[6:8], y[6:8]) is None
    clips = [Clip(Path(f"{i}.wav"), lab, f"{c}:s", c) for i, (lab, _, c) in enumerate(rows)]
    pred = Predictions(clips, probs.astype(np.float32), probs.astype(np.float32), Counter())
    report = add_arousal(eval_report(pred), pred)
    assert report["overall"]["arousal_bacc"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert report["per_corpus"]["a"]["arousal_bacc"] == pytest.approx(2 / 3)
    assert report["per_corpus"]["b"]["arousal_bacc"] is None and report["per_corpus"]["c"]["arousal_bacc"] is None
    json.dumps(report)  # null, not NaN


def test_ua_present_and_dims_on_constructed_predictions():
    """``ua_present`` scores a corpus with fewer labels the way cross-corpus papers do: the
    argmax over the labels the corpus has; ``dims`` correlates predicted arousal/valence with
    the true labels' circumplex positions."""
    from collections import Counter

    from streamer.core.labels import INDEX, LABELS
    from streamer.train.corpora import Clip
    from streamer.train.evaluate import Predictions, eval_report

    def p(**kw):
        return [kw.get(k, 0.0) for k in LABELS]

    rows = [  # a 4-label corpus: angry, happy, neutral, sad
        ("angry", p(disgust=0.5, angry=0.4, sad=0.1)),    # 7-way wrong (disgust), 4-way right
        ("happy", p(surprise=0.6, happy=0.3, sad=0.1)),   # 7-way wrong, 4-way right
        ("neutral", p(neutral=0.8, sad=0.2)),             # right both ways
        ("sad", p(fear=0.5, neutral=0.3, sad=0.2)),       # wrong both ways (neutral > sad)
    ]
    probs = np.array([r[1] for r in rows], np.float32)
    clips = [Clip(Path(f"{i}.wav"), lab, "m:s", "m") for i, (lab, _) in enumerate(rows)]
    report = eval_report(Predictions(clips, probs, probs, Counter()))
    rep = report["per_corpus"]["m"]
    assert rep["labels_present"] == ["angry", "happy", "neutral", "sad"]
    assert rep["ua"] == pytest.approx(1 / 4)
    assert rep["ua_present"] == pytest.approx(3 / 4)
    assert set(rep["dims"]) == {"arousal", "valence"}
    assert rep["dims"]["arousal"] > 0  # aroused clips get the higher predicted arousal
    assert [INDEX[r[0]] for r in rows] == [0, 3, 4, 5]
    json.dumps(report)
