"""Alert rules: consecutive windows, cooldown, uncertain windows, per-track conditions, dead air."""

import pytest

from streamer.core.alerts import DEFAULT_RULES, AlertRule, Alerts
from streamer.runtime.config import Config
from streamer.core.errors import ConfigError


def win(end, label="angry", track="customer", conf=0.7, uncertain=False, arousal=0.0, valence=0.0):
    return {"type": "window", "track": track, "start_s": end - 2.5, "end_s": end, "label": label, "confidence": conf,
            "uncertain": uncertain, "dims": {"fused": {"arousal": arousal, "valence": valence}}}


ANGRY = AlertRule("angry customer", track="customer", labels=("angry",), for_windows=3, cooldown_s=30)


def feed(alerts, windows, now=0.0):
    out = []
    for w in windows:
        out += alerts.on_window(w, now)
    return out


def test_three_in_a_row_raise_one_alert_with_a_reason():
    a = Alerts((ANGRY,), "CA1")
    got = feed(a, [win(2.5), win(5.0, conf=0.6), win(7.5, conf=0.5)])
    assert len(got) == 1
    alert = got[0]
    assert alert["type"] == "alert" and alert["rule"] == "angry customer" and alert["call_id"] == "CA1"
    assert alert["track"] == "customer" and alert["at_s"] == 7.5 and alert["id"] == "CA1-1"
    assert alert["reason"] == "customer angry in 3 windows in a row, confidence 0.60"


def test_a_break_in_the_run_starts_it_again():
    a = Alerts((ANGRY,), "c")
    assert feed(a, [win(2.5), win(5.0), win(7.5, label="neutral"), win(10.0), win(12.5)]) == []
    assert len(feed(a, [win(15.0)])) == 1


def test_uncertain_windows_never_count():
    a = Alerts((ANGRY,), "c")
    assert feed(a, [win(2.5), win(5.0), win(7.5, uncertain=True), win(10.0), win(12.5)]) == []
    assert feed(Alerts((ANGRY,), "c"), [win(t, uncertain=True) for t in (2.5, 5, 7.5, 10, 12.5)]) == []


def test_cooldown_is_per_rule_and_track_in_track_time():
    a = Alerts((ANGRY,), "c")
    assert len(feed(a, [win(2.5), win(5.0), win(7.5)])) == 1
    assert feed(a, [win(10.0), win(12.5), win(15.0)]) == []  # within 30 s of 7.5
    assert len(feed(a, [win(35.0), win(37.5), win(40.0)])) == 1  # 40 >= 37.5


def test_the_rule_watches_only_its_track():
    a = Alerts((ANGRY,), "c")
    assert feed(a, [win(t, track="agent") for t in (2.5, 5.0, 7.5)]) == []
    anyone = Alerts((AlertRule("anger", labels=("angry",), for_windows=2),), "c")
    got = feed(anyone, [win(2.5, track="agent"), win(2.6, track="customer"), win(5.0, track="agent")])
    assert [x["track"] for x in got] == ["agent"]  # runs are counted per track


def test_arousal_and_valence_condition_and_min_confidence():
    rule = AlertRule("heated", track="any", arousal_above=0.5, valence_below=-0.2, min_confidence=0.5, for_windows=2)
    a = Alerts((rule,), "c")
    assert feed(a, [win(2.5, label="fear", arousal=0.7, valence=-0.5), win(5.0, label="fear", arousal=0.6, valence=0.1)]) == []
    got = feed(a, [win(7.5, label="disgust", arousal=0.7, valence=-0.5), win(10.0, label="fear", arousal=0.8, valence=-0.6)])
    assert len(got) == 1 and "arousal +0.80, valence -0.60" in got[0]["reason"]
    low = Alerts((rule,), "c")
    assert feed(low, [win(t, arousal=0.9, valence=-0.9, conf=0.3) for t in (2.5, 5.0, 7.5)]) == []


def test_the_shipped_angry_rule_takes_either_condition():
    rule = next(r for r in DEFAULT_RULES if r.name == "angry customer")
    a = Alerts((rule,), "c")
    got = feed(a, [win(2.5), win(5.0, label="disgust", arousal=0.6, valence=-0.5), win(7.5)])
    assert len(got) == 1 and got[0]["track"] == "customer"


def test_dead_air_no_speech_and_no_audio():
    rule = AlertRule("dead air", silence_s=30.0, cooldown_s=60.0)
    a = Alerts((rule,), "c", started=0.0)
    a.on_audio(29.0)
    assert a.tick(29.0) == []
    got = a.tick(31.0)  # audio keeps coming, but no window (speech) for 31 s
    assert len(got) == 1 and got[0]["reason"] == "no speech on any track for 31 s" and got[0]["track"] is None
    assert a.tick(40.0) == []  # quiet for its cooldown
    b = Alerts((rule,), "c", started=0.0)
    b.on_window(win(2.5), 1.0)
    assert b.tick(25.0) == [] and b.tick(31.5)[0]["reason"] == "the stream sent no audio for 32 s"
    assert b.tick(100.0, ended=True) == []  # an ended call raises nothing


def test_rules_load_from_config(tmp_path):
    cfg = Config.load()
    assert [r.name for r in cfg.alerts] == ["angry customer", "dead air"]
    path = tmp_path / "c.toml"
    path.write_text('[[alerts]]\nname = "sad agent"\ntrack = "agent"\nlabels = ["sad"]\nfor_windows = 2\n')
    assert Config.load(path).alerts == (AlertRule("sad agent", track="agent", labels=("sad",), for_windows=2),)
    for text, fragment in (('[[alerts]]\nname = "x"\nlabels = ["furious"]\n', "not among"),
                           ('[[alerts]]\nname = "x"\n', "give labels"),
                           ('[[alerts]]\nlabels = ["angry"]\n', "needs a name"),
                           ('[[alerts]]\nname = "x"\nlabels = ["angry"]\nwindows = 3\n', "unknown key 'windows'"),
                           ('[[alerts]]\nname = "x"\nlabels = ["angry"]\n[[alerts]]\nname = "x"\nlabels = ["sad"]\n', "distinct"),
                           ('alerts = 3\n', "array of tables")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=fragment):
            Config.load(path)
