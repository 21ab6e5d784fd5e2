import pytest

from streamer.config import ROOT, Config
from streamer.errors import ConfigError
from streamer.train.recipe import load_config


def test_shipped_config_documents_every_setting():
    import tomllib
    from dataclasses import asdict

    written = tomllib.loads((ROOT / "config.toml").read_text())
    defaults = asdict(Config())
    assert set(written) == set(defaults)
    for section, values in defaults.items():
        assert set(written[section]) == set(values), section
        for key, value in values.items():
            assert written[section][key] == (list(value) if isinstance(value, tuple) else value), (section, key)


def test_shipped_config_loads():
    cfg = Config.load(ROOT / "config.toml")
    assert cfg.audio.window_samples == 40000 and cfg.audio.min_window_samples == 8000
    assert cfg.audio.model_path.is_dir()


@pytest.mark.parametrize("text,fragment", [
    ("[audio]\nwindow_secs = 2.0\n", "unknown key 'window_secs'"),
    ("[audio]\nwindow_seconds = 'long'\n", "[audio] window_seconds: expected float"),
    ("[audio]\nwindow_seconds = 0.1\n", "[audio] window_seconds: must be between 0.5 and 30"),
    ("[audio]\nthreads = true\n", "[audio] threads: expected int"),
    ("[video]\nfps = 3\n", "unknown section(s) 'video'"),
    ("[audio\n", "not valid TOML"),
    ("[whisper]\ncompute_type = 'int4'\n", "[whisper] compute_type"),
    ("[vad]\naggressiveness = 5\n", "[vad] aggressiveness"),
    ("[vad]\nframe_ms = 25\n", "[vad] frame_ms: must be 10, 20 or 30"),
    ("[vad]\nframe_ms = '30'\n", "[vad] frame_ms: expected int"),
    ("[fusion]\naudio_weight = 0\ntext_weight = 0\n", "[fusion] audio_weight, text_weight: must be >= 0 with a positive sum"),
    ("[fusion]\ntext_weight = -1\n", "[fusion] audio_weight, text_weight"),
    ("[fusion]\nmode = 'max'\n", "[fusion] mode"),
    ("[fusion]\nmode = 'learned'\nmodel_dir = ''\n", "[fusion] model_dir"),
    ("[fusion]\nmodel_dir = 3\n", "[fusion] model_dir: expected str"),
    ("[fusion]\nmin_confidence = 1.0\n", "[fusion] min_confidence: must be in [0, 1)"),
    ("[fusion]\nuncertain_weight = 1.5\n", "[fusion] uncertain_weight"),
    ("[asr]\nengine = 'sphinx'\n", "[asr] engine"),
    ("[asr]\nwhisper_encode_s = 2.0\n", "[asr] whisper_encode_s: must be between 4 and 30"),
    ("[live]\nqueue_windows = 0\n", "[live] queue_windows"),
    ("[live]\nlog_transcript = 'no'\n", "[live] log_transcript: expected bool"),
    ("[batch]\nchannel_names = ['a', 'a']\n", "[batch] channel_names"),
    ("audio = 3\n", "[audio] must be a table"),
])
def test_bad_config_names_the_key(tmp_path, text, fragment):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        Config.load(path)
    assert fragment in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "none.toml")


def test_shipped_training_recipe_loads():
    cfg = load_config(ROOT / "models" / "audio-emotion" / "train.toml")
    assert cfg.folds == 5 and cfg.net.inputs == "both"


def test_training_recipe_rejects_unknown_keys(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(path)
    path.write_text("epochs = 0\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_config(path)
