import pytest

from streamer.runtime.config import Config
from streamer.core.paths import CHECKOUT as ROOT
from streamer.core.errors import ConfigError
from streamer.train.recipe import load_config


def test_shipped_config_documents_every_setting():
    import tomllib
    from dataclasses import asdict

    written = tomllib.loads((ROOT / "config.toml").read_text())
    defaults = asdict(Config())
    assert set(written) == set(defaults)
    def same(table: dict, values: dict, where: str) -> None:
        assert set(table) == set(values), where
        for key, value in values.items():
            if isinstance(value, dict):
                same(table[key], value, f"{where}.{key}")
            else:
                assert table[key] == (list(value) if isinstance(value, tuple) else value), (where, key)

    for section, values in defaults.items():
        if section == "alerts":  # an array of tables; TOML has no null, so an unset bound is left out
            assert [{k: v for k, v in r.items() if v is not None} for r in values] == \
                [{k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items()} for r in written["alerts"]]
            continue
        same(written[section], values, section)


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
    ("[asr.whisper]\nencode_s = 2.0\n", "[asr.whisper] encode_s: must be between 4 and 30"),
    ("[asr.whisper]\nlogprob_threshold = 0.5\n", "[asr.whisper] logprob_threshold: must be between -20 and 0"),
    ("[asr.whisper]\nbeam_size = 0\n", "[asr.whisper] beam_size: must be between 1 and 10"),
    ("[asr.whisper]\nbeam = 2\n", "config [asr.whisper]: unknown key 'beam'"),
    ("[asr]\nwhisper = 3\n", "[asr] whisper: must be a table ([asr.whisper])"),
    ("[asr]\nwhisper_encode_s = 10.0\n", "unknown key 'whisper_encode_s' (known: engine, vosk_model, whisper); it is now [asr.whisper] encode_s"),
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
    cfg = load_config(ROOT / "models" / "audio-emotion-network" / "train.toml")
    assert cfg.folds == 5 and cfg.net.inputs == "both"


def test_training_recipe_rejects_unknown_keys(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(path)
    path.write_text("epochs = 0\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_config(path)
    path.write_text("epochs = 'many'\n")  # types are checked by the same builder as config.toml
    with pytest.raises(ConfigError, match="training config epochs: expected int"):
        load_config(path)
    path.write_text("[net]\ninputs = 'video'\n")
    with pytest.raises(ConfigError, match=r"training config \[net\]: inputs must be"):
        load_config(path)


def test_text_training_recipe_uses_the_same_builder(tmp_path):
    from streamer.train.text import TextTrainConfig

    assert TextTrainConfig.load(ROOT / "models" / "text-emotion" / "train.toml").encoder == "full"
    path = tmp_path / "train.toml"
    path.write_text("epoch = 3\n")
    with pytest.raises(ConfigError, match="text training config: unknown key 'epoch'"):
        TextTrainConfig.load(path)
    path.write_text("lr = '1e-3'\n")
    with pytest.raises(ConfigError, match="text training config lr: expected float"):
        TextTrainConfig.load(path)


def test_config_imports_no_shell_or_live_module():
    """The import graph runs one way: settings know nothing of the live pipeline or the shells."""
    import subprocess
    import sys

    code = ("import sys, streamer.runtime.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('streamer.live', 'streamer.cli', 'streamer.serve', 'streamer.ui'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
