"""ASR-style text: what Vosk and Whisper (lowercased) give the text branch."""

import pytest

from streamer.text.normalize import asr_style, number_words, ordinal_words


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("I can't BELIEVE it...", "i can't believe it"),
    ("It cost $1,250.50", "it cost one thousand two hundred fifty point five zero dollars"),
    ("50% off, 2nd time", "fifty percent off second time"),
    ("'quoted' words", "quoted words"),
    ("Café naïve", "cafe naive"),
    ("🎉🎉 yay 🎉", "yay"),
    ("[NAME] is here", "name is here"),
    ("  \t\n ", ""),
    ("?!...", ""),
])
def test_asr_style(raw, expected):
    assert asr_style(raw) == expected


def test_numbers():
    assert number_words(115) == "one hundred fifteen"
    assert number_words(1_000_000) == "one million"
    assert number_words(-3) == "minus three"
    assert ordinal_words(3) == "third" and ordinal_words(100) == "one hundredth"


def test_output_is_already_normal():
    once = asr_style("Wow!!! That's 100% AMAZING, isn't it? #1")
    assert asr_style(once) == once
    assert once == once.lower() and not any(c in once for c in ",.!?#%")
