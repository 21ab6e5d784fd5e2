"""Text corpora readers: GoEmotions multi-label rule, tab-separated files, label mapping."""

import numpy as np
import pytest

from streamer.core.errors import ConfigError
from streamer.core.labels import INDEX
from streamer.train.textdata import read_goemotions, read_tsv


@pytest.mark.corpus("reads GoEmotions' multi-label dev split")
def test_goemotions_rule(goemotions):
    rows = read_goemotions(goemotions, "dev")
    assert len(rows) == 5426 and np.allclose(rows.targets.sum(axis=1), 1)
    multi = rows.targets.max(axis=1) < 0.999
    assert 0.05 < multi.mean() < 0.17  # 17% of rows have several labels, about 9% several Ekman labels
    assert {round(float(v), 3) for v in rows.targets[multi].max(axis=1)} <= {0.5, 0.333, 0.25}
    single = rows.single()
    assert len(single) == int((~multi).sum()) and np.all(single.targets.max(axis=1) == 1)
    # "I've never been this sad in my life!" is labelled sadness only
    i = single.texts.index("I've never been this sad in my life!")
    assert single.labels()[i] == INDEX["sad"]


@pytest.mark.corpus("reads MELD's dev split and checks its counts against its MANIFEST.md")
def test_tsv_reader_on_meld(meld):
    rows = read_tsv(meld / "dev.tsv")
    assert len(rows) == 1109 and rows.counts()["angry"] == 153


def test_tsv_reader(tmp_path):
    f = tmp_path / "a.tsv"
    f.write_text("I said\tno\tanger\nyay\tjoy\n\nok\tneutral\n")
    rows = read_tsv(f)
    assert rows.texts == ("I said\tno", "yay", "ok")  # split on the last tab
    assert rows.labels().tolist() == [INDEX["angry"], INDEX["happy"], INDEX["neutral"]]
    f.write_text("fine\tneutral\nmeh\tboredom\n")
    with pytest.raises(ConfigError, match="boredom"):
        read_tsv(f)
    f.write_text("no tab here\n")
    with pytest.raises(ConfigError, match="no tab"):
        read_tsv(f)
    with pytest.raises(ConfigError, match="GoEmotions"):
        read_goemotions(tmp_path, "test")
