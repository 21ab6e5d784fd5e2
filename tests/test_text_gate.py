"""The text gate: the text branch gives no opinion when the recogniser's own evidence says its
words are unreliable (``streamer.asr.reliability``), and says why (``text_skipped``)."""

import shutil
import subprocess
import threading

import pytest

from streamer.asr.reliability import REASONS, Evidence, TextGateConfig, compression_ratio, text_skipped
from streamer.runtime.config import Config
from streamer.core.errors import ConfigError

GOOD = dict(words=6, avg_logprob=-0.35, no_speech_prob=0.05, compression_ratio=1.0, word_conf=0.9)


# --- the pure decision, on made-up decode statistics ----------------------------------------
@pytest.mark.parametrize("change,reason", [
    ({}, None),
    ({"avg_logprob": -1.3}, "low_confidence"),
    ({"word_conf": 0.4}, "low_confidence"),
    ({"no_speech_prob": 0.9}, "no_speech"),
    ({"compression_ratio": 3.1}, "repetitive"),
    ({"languages": (("pl", 0.97), ("en", 0.01))}, "language"),
    ({"languages": (("en", 0.93), ("nn", 0.02))}, None),
    ({"languages": (("de", 0.45), ("en", 0.40), ("nl", 0.1))}, "language"),
    ({"words": 0, "avg_logprob": -3.0, "word_conf": 0.1}, None),  # nothing decoded: nothing to skip
    ({"avg_logprob": None, "no_speech_prob": None, "compression_ratio": None, "word_conf": None}, None),
])
def test_decision_on_made_up_statistics(change, reason):
    assert text_skipped(Evidence(**{**GOOD, **change}), TextGateConfig()) == reason


def test_decision_order_and_switches():
    bad = Evidence(words=4, avg_logprob=-2.0, no_speech_prob=0.95, compression_ratio=5.0, word_conf=0.1,
                   languages=(("pl", 0.99),))
    assert text_skipped(bad) == "no_speech"  # the first reason that applies, in REASONS order
    assert text_skipped(Evidence(**{**GOOD, "avg_logprob": -2.0, "compression_ratio": 5.0})) == "repetitive"
    assert text_skipped(bad, TextGateConfig(enabled=False)) is None
    assert text_skipped(None) is None
    # the allowed languages' probability adds up; another list of languages changes the verdict
    assert text_skipped(Evidence(**{**GOOD, "languages": (("pl", 0.9), ("en", 0.05))}), TextGateConfig(languages=("pl",))) is None
    # thresholds are inclusive on the reading side
    assert text_skipped(Evidence(**{**GOOD, "word_conf": 0.65}), TextGateConfig(min_word_conf=0.65)) is None
    assert set(REASONS) == {"no_speech", "language", "repetitive", "low_confidence"}


def test_compression_ratio_finds_loops():
    assert compression_ratio("thank you for calling how can I help") < 1.5
    assert compression_ratio("I'm not going to " * 12) > 2.4
    assert compression_ratio("") == 0.0


# --- settings -----------------------------------------------------------------------------
def test_shipped_config_has_the_gate():
    gate = Config.load().asr.whisper.text_gate
    assert gate.enabled and gate.languages == ("en",) and 0 < gate.min_word_conf < 1


@pytest.mark.parametrize("table,fragment", [
    ({"min_word_conf": 1.5}, "min_word_conf: must be between 0 and 1"),
    ({"min_avg_logprob": 0.5}, "min_avg_logprob: must be between -20 and 0"),
    ({"max_no_speech_prob": 0.0}, "max_no_speech_prob: must be in (0, 1]"),
    ({"max_compression_ratio": 0.5}, "max_compression_ratio: must be between 1 and 100"),
    ({"min_language_prob": -0.1}, "min_language_prob: must be between 0 and 1"),
    ({"languages": []}, "languages: must be a list of language codes"),
    ({"languages": ["English"]}, "languages: must be a list of language codes"),
    ({"min_word_conf": "high"}, "min_word_conf: expected float"),
    ({"min_conf": 0.5}, "unknown key 'min_conf'"),
])
def test_config_rejects_bad_thresholds(table, fragment):
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"asr": {"whisper": {"text_gate": table}}})
    assert fragment in str(e.value) and "asr.whisper.text_gate" in str(e.value)


def test_config_takes_good_thresholds():
    cfg = Config.from_dict({"asr": {"whisper": {"text_gate": {"min_word_conf": 0.5, "languages": ["en", "de"]}}}})
    assert cfg.asr.whisper.text_gate.min_word_conf == 0.5 and cfg.asr.whisper.text_gate.languages == ("en", "de")


# --- the records and the dashboard --------------------------------------------------------
def test_records_carry_the_reason_and_the_dashboard_shows_it():
    import io

    from rich.console import Console

    from streamer.core.messages import UtteranceResult, WindowResult, Word
    from streamer.ui.dashboard import prob_table, window_text
    from streamer.ui.lines import utterance_line, window_line

    p = {"angry": 0.1, "disgust": 0.1, "fear": 0.1, "happy": 0.1, "neutral": 0.4, "sad": 0.1, "surprise": 0.1}
    w = WindowResult(0, 0, 40000, (Word("kurwa", 0, 8000, 0.3),), p, None, p, p, "neutral", "😐", 0.4, 10.0,
                     text_skipped="low_confidence")
    rec = w.to_record()
    assert rec["text_skipped"] == "low_confidence" and rec["probs"]["text"] is None
    assert WindowResult(0, 0, 40000, (), p, None, p, p, "neutral", "😐", 0.4, 10.0).to_record()["text_skipped"] is None
    u = UtteranceResult(0, 0, 40000, (0,), w.words, p, None, p, "neutral", "😐", 0.4, False, {}, text_skipped="language")
    assert u.to_record()["text_skipped"] == "language"
    assert "text skipped: low confidence" in window_line(w) and "text skipped: language" in utterance_line(u)
    c = Console(width=80, record=True, file=io.StringIO())
    c.print(window_text(w))
    c.print(prob_table(w, 60))
    shown = c.export_text()
    assert "[text skipped: low confidence]" in shown and "skipped" in shown.splitlines()[2]


# --- real audio, the real Whisper model, the whole pipeline ---------------------------------
def _speak(tmp_path, voice: str, text: str, name: str):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed: apt-get install espeak-ng sox")
    raw, out = tmp_path / f"{name}.raw.wav", tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", "-q", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out


def _records(path, models):
    from streamer.runtime.streams import open_stream
    from streamer.live.sources import FileSource

    records = []
    pipe = open_stream(Config.load(), models, FileSource(path, fast=True), [lambda r: records.append(r.to_record())],
                       block_when_full=True)
    assert pipe.run(threading.Event())["error"] is None
    return [r for r in records if r["type"] in ("window", "utterance")]


OTHER = [("pl", "Dzień dobry, chciałbym zapytać o moje zamówienie z zeszłego tygodnia."),
         ("pl", "Nie mogę uwierzyć, że to się naprawdę stało, jestem bardzo zła."),
         ("de", "Guten Tag, ich möchte gerne meine Rechnung von letzter Woche besprechen."),
         ("de", "Das ist wirklich eine schreckliche Nachricht für uns alle.")]
ENGLISH = ["Thank you so much for calling, how can I help you today?",
           "I have been waiting for two weeks and nobody called me back.",
           "This is absolutely wonderful news, I am so happy for you."]


@pytest.mark.slow
def test_text_skipped_on_speech_in_other_languages(models, tmp_path):
    for k, (voice, text) in enumerate(OTHER):
        records = _records(_speak(tmp_path, voice, text, f"{voice}{k}"), models)
        assert records, voice
        assert all(r["probs"]["text"] is None for r in records), (voice, [r["transcript"] for r in records])
        assert all(r["text_skipped"] in REASONS for r in records if r["words"]), (voice, records)
        utt = [r for r in records if r["type"] == "utterance"]
        assert utt and all(r["text_skipped"] for r in utt)


@pytest.mark.slow
def test_text_skipped_on_noise(models, tmp_path):
    if shutil.which("sox") is None:
        pytest.skip("sox is needed")
    for kind, vol in (("whitenoise", "0.3"), ("pinknoise", "0.5")):
        path = tmp_path / f"{kind}.wav"
        # -R: the same noise every run (sox seeds its generator from the clock otherwise)
        subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "synth", "4", kind, "vol", vol],
                       check=True)
        records = _records(path, models)
        assert records, kind  # the VAD takes this noise for speech: the recogniser decodes it
        shown = [(r["transcript"], r["text_skipped"]) for r in records]
        assert all(r["probs"]["text"] is None for r in records), shown
        # words decoded from noise are never read, and say why; a window given no words has nothing
        # to skip, but the recogniser's evidence on this noise gives a reason somewhere
        assert all(r["text_skipped"] in REASONS for r in records if r["words"]), shown
        assert any(r["text_skipped"] in REASONS for r in records), shown


@pytest.mark.slow
def test_english_sentences_are_read(models, tmp_path):
    for k, text in enumerate(ENGLISH):
        records = _records(_speak(tmp_path, "en-us", text, f"en{k}"), models)
        worded = [r for r in records if r["words"]]
        assert worded, text
        assert all(r["text_skipped"] is None for r in worded), [(r["transcript"], r["text_skipped"]) for r in worded]
        assert all(r["probs"]["text"] is not None for r in worded)
