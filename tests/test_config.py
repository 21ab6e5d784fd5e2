import pytest

from streamer.config import ROOT, Config
from streamer.errors import ConfigError
from streamer.train.recipe import load_config


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
