"""Text as a speech recogniser writes it: lowercase words, no punctuation, numbers as words.

Vosk and Whisper (after ``asr_style``) both give the text branch this form, so the branch is
trained and evaluated on it too.

>>> asr_style("I'm SO happy!!! We won 2 games, 3.5 points & 10% more :)")
"i'm so happy we won two games three point five points and ten percent more"
>>> asr_style("[NAME] paid $25 on the 3rd")
'name paid twenty five dollars on the third'
>>> asr_style("  ...  ")
''
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """Cardinal number in words, the way a recogniser's vocabulary spells it.

    >>> number_words(0), number_words(42), number_words(1905), number_words(2_000_017)
    ('zero', 'forty two', 'one thousand nine hundred five', 'two million seventeen')
    """
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """Ordinal number in words.

    >>> ordinal_words(1), ordinal_words(21), ordinal_words(40), ordinal_words(12)
    ('first', 'twenty first', 'fortieth', 'twelfth')
    """
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL:
        words[-1] = _ORDINAL[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits(match: re.Match) -> str:
    cur, whole, frac, suffix, pct = match.group("cur"), match.group("int"), match.group("frac"), match.group("ord"), match.group("pct")
    value = int(whole.replace(",", ""))
    if suffix:
        return f" {ordinal_words(value)} "
    text = number_words(value)
    if frac:
        text += " point " + " ".join(_ONES[int(d)] for d in frac)
    if pct:
        text += " percent"
    if cur:
        text += " dollars" if cur == "$" else " pounds" if cur == "£" else " euros"
    return f" {text} "


_NUMBER = re.compile(r"(?P<cur>[$£€])?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
                     r"(?:(?P<ord>st|nd|rd|th)\b)?(?P<pct>\s?%)?")
_PLACEHOLDER = re.compile(r"\[([A-Za-z]+)\]")
_NOT_WORD = re.compile(r"[^a-z' ]+")
_EDGE_QUOTES = re.compile(r"(?<![a-z])'|'(?![a-z])")


def asr_style(text: str) -> str:
    """Lowercase, numbers and symbols spoken as words, punctuation and emoji removed,
    apostrophes kept inside words ("don't"), one space between words."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")
    text = _PLACEHOLDER.sub(r" \1 ", text)
    text = _NUMBER.sub(_digits, text)
    text = text.replace("&", " and ").replace("%", " percent ").replace("+", " plus ").replace("@", " at ")
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _NOT_WORD.sub(" ", text)
    text = _EDGE_QUOTES.sub(" ", text)
    return " ".join(text.split())
