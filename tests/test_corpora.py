from collections import Counter

import pytest

from streamer.core.labels import LABELS
from streamer.train.corpora import Clip, Skip, parse, scan

# File names as each corpus's documentation gives them.
DOCUMENTED = [
    ("03-01-06-01-02-01-12.wav", "ravdess", "fear", "ravdess:12"),
    ("03-01-02-02-01-01-01.flac", "ravdess", "neutral", "ravdess:01"),  # calm counts as neutral
    ("03-02-03-01-01-01-05.wav", "ravdess", "happy", "ravdess:05"),  # song channel
    ("1001_DFA_ANG_XX.wav", "crema-d", "angry", "crema-d:1001"),
    ("1091_IEO_SAD_HI.wav", "crema-d", "sad", "crema-d:1091"),
    ("OAF_back_angry.wav", "tess", "angry", "tess:OAF"),
    ("YAF_beg_ps.wav", "tess", "surprise", "tess:YAF"),
    ("OA_bite_neutral.wav", "tess", "neutral", "tess:OAF"),  # misnamed in the release
    ("DC_a01.wav", "savee", "angry", "savee:DC"),
    ("JK_su15.wav", "savee", "surprise", "savee:JK"),
    ("KL_sa03.wav", "savee", "sad", "savee:KL"),
    ("03a01Fa.wav", "emodb", "happy", "emodb:03"),
    ("16b10Wb.wav", "emodb", "angry", "emodb:16"),
    ("11a02Ec.wav", "emodb", "disgust", "emodb:11"),
    ("dis-f1-b1.wav", "emovo", "disgust", "emovo:f1"),
    ("sor-m3-l4.wav", "emovo", "surprise", "emovo:m3"),
    ("SM1_F10_A010.wav", "urdu", "angry", "urdu:SM1"),
    ("SF3_F2_H05.wav", "urdu", "happy", "urdu:SF3"),
]


@pytest.mark.parametrize("name,corpus,label,speaker", DOCUMENTED)
def test_documented_names(name, corpus, label, speaker):
    clip = parse(name)
    assert isinstance(clip, Clip)
    assert (clip.corpus, clip.label, clip.speaker) == (corpus, label, speaker)
    assert clip.label in LABELS


def test_savee_speaker_from_folder():
    clip = parse("AudioData/JE/h07.wav")
    assert isinstance(clip, Clip) and clip.speaker == "savee:JE" and clip.label == "happy"
    assert parse("elsewhere/h07.wav") is None  # no speaker: not a SAVEE name


@pytest.mark.parametrize("name", ["03a01Lb.wav", "1001_DFA_XXX_XX.wav"])
def test_labels_outside_the_set_are_skipped(name):
    assert isinstance(parse(name), Skip)


def test_unknown_names():
    assert parse("meeting_recording.wav") is None
    assert parse("03-01-01.wav") is None


def test_scan_counts_skips(tmp_path):
    for name in ["03a01Lb.wav", "03a01Fa.wav", "notes.wav", "readme.txt"]:
        (tmp_path / name).write_bytes(b"")
    result = scan([tmp_path])
    assert [c.label for c in result.clips] == ["happy"]
    assert result.skipped == Counter({"emodb: label outside the set: boredom": 1, "unrecognised file name": 1})


def test_scan_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan([tmp_path / "nope"])


@pytest.mark.corpus("counts the clips, labels and speakers scan() finds in the corpora")
def test_shared_corpora(ravdess, tess):
    result = scan([ravdess, tess])
    assert len(result.clips) == 4000 and not result.skipped
    per = Counter((c.corpus, c.label) for c in result.clips)
    assert per[("ravdess", "neutral")] == 240  # 80 neutral + 160 calm
    assert per[("tess", "surprise")] == 400
    assert len({c.speaker for c in result.clips if c.corpus == "ravdess"}) == 20
    assert {c.speaker for c in result.clips if c.corpus == "tess"} == {"tess:OAF", "tess:YAF"}
