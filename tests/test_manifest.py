"""Manifests: labelled clips listed in a TSV or CSV, whatever the audio files are called."""

from pathlib import Path

import pytest

from streamer.core.errors import SerError
from streamer.train.manifest import ManifestError, read_manifest


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    for name in ("one.wav", "sub/two 2.flac", "x.ogg"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_csv_relative_absolute_synonyms_and_skips(folder):
    m = folder / "calls.csv"
    m.write_text("Path,Label,Speaker\n"
                 "one.wav,Anger,alice\n"
                 f"{folder / 'sub' / 'two 2.flac'},calm,bob\n"
                 "x.ogg,boredom,bob\n"
                 "x.ogg,boredom,carol\n"
                 "gone.wav,sad,bob\n"
                 ",happy,bob\n")
    got = read_manifest(m)
    assert [(c.path, c.label, c.speaker, c.corpus) for c in got.clips] == [
        (folder / "one.wav", "angry", "calls:alice", "calls"),
        (folder / "sub" / "two 2.flac", "neutral", "calls:bob", "calls"),
    ]
    assert got.rows == 6 and dict(got.unknown_labels) == {"boredom": 2} and got.missing == 1 and got.malformed == 1
    assert dict(got.skipped) == {"manifest: unknown label: boredom": 2, "manifest: missing audio file": 1,
                                 "manifest: row without path or label": 1}
    assert got.summary()["unknown_labels"] == {"boredom": 2}


def test_tsv_without_speaker_and_names_with_commas(folder):
    (folder / "a, b.wav").write_bytes(b"")
    m = folder / "list.tsv"
    m.write_text("label\tpath\nhappy\ta, b.wav\nsurprised\tsub/two 2.flac\n")
    got = read_manifest(m)
    assert [(c.path.name, c.label, c.speaker) for c in got.clips] == [("a, b.wav", "happy", "list:unknown"),
                                                                     ("two 2.flac", "surprise", "list:unknown")]


@pytest.mark.parametrize("sep", ["\t", ",", ";"])
def test_other_extension_is_sniffed(folder, sep):
    m = folder / "clips.txt"
    m.write_text(f"\ufeff# my clips\npath{sep}label\none.wav{sep}joy\n")
    assert [c.label for c in read_manifest(m).clips] == ["happy"]


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("path,label\n", "no rows"),
    ("file,emotion\none.wav,angry\n", "no 'path' or 'label' column"),
    ("one.wav,angry\n", "header"),
])
def test_malformed_manifest_is_one_clear_error(folder, text, words):
    m = folder / "bad.csv"
    m.write_text(text)
    with pytest.raises(ManifestError, match=words) as err:
        read_manifest(m)
    assert isinstance(err.value, SerError) and "\n" not in str(err.value) and str(m) in str(err.value)


def test_separator_follows_the_header_when_the_extension_is_wrong(folder):
    (folder / "tabs.csv").write_text("path\tlabel\none.wav\tsad\n")
    (folder / "commas.tsv").write_text("path,label\none.wav,fearful\n")
    assert [c.label for c in read_manifest(folder / "tabs.csv").clips] == ["sad"]
    assert [c.label for c in read_manifest(folder / "commas.tsv").clips] == ["fear"]


def test_missing_and_binary_manifest(folder):
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(folder / "nope.tsv")
    (folder / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ManifestError, match="UTF-8"):
        read_manifest(folder / "bin.csv")
