"""The text branch: label mapping, no opinion on empty text, batch = single, the transformers
path with a small model built here (no network), the shipped model on real rows, a tiny
training run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from streamer.core.paths import CHECKOUT as ROOT
from streamer.core.errors import ModelError
from streamer.core.labels import LABELS, text_model_label

transformers = pytest.importorskip("transformers")


def test_label_table():
    assert text_model_label("anger") == "angry" and text_model_label("joy") == "happy"
    assert text_model_label("sadness") == "sad" and text_model_label("Surprise") == "surprise"
    assert text_model_label("nervousness") == "fear" and text_model_label("curiosity") == "surprise"
    assert text_model_label("LABEL_3") is None and text_model_label("boredom") is None


def make_hf_model(folder, id2label, multi_label=False):
    """A small random BERT classifier saved locally, with the MiniLM tokenizer (plumbing only)."""
    from streamer.text.emotion import EMBEDDED_BASE, base_folder

    tok = transformers.AutoTokenizer.from_pretrained(base_folder(EMBEDDED_BASE))
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, id2label=dict(enumerate(id2label)),
                                  label2id={n: i for i, n in enumerate(id2label)},
                                  problem_type="multi_label_classification" if multi_label else None)
    import torch

    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("multi_label", [False, True])
def test_local_transformers_model(tmp_path, multi_label):
    from streamer.text.torch_text import HFTextEmotion
    from streamer.text.load import load_text_emotion

    folder = make_hf_model(tmp_path / "m", ["anger", "joy", "neutral", "sadness", "admiration"], multi_label)
    model = load_text_emotion(str(folder))
    assert isinstance(model, HFTextEmotion)
    p = model.predict("I am so happy today")
    assert set(p) == set(LABELS) and abs(sum(p.values()) - 1) < 1e-5
    assert p["disgust"] == 0.0 and p["fear"] == 0.0 and p["happy"] > 0  # joy + admiration summed
    assert model.predict("   ") is None
    batch = model.predict_batch(["I am so happy today", "", "this is terrible"])
    assert batch[1] is None and all(abs(batch[0][k] - p[k]) < 1e-5 for k in LABELS)


def test_unknown_labels_are_named(tmp_path):
    from streamer.text.load import load_text_emotion

    folder = make_hf_model(tmp_path / "m", ["anger", "LABEL_1", "boredom"])
    with pytest.raises(ModelError, match="LABEL_1, boredom"):
        load_text_emotion(str(folder))


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from streamer.text.torch_text import EmbeddedTextEmotion
    from streamer.text.load import load_text_emotion

    with pytest.raises(ModelError, match="does not exist"):
        load_text_emotion(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="ser-train-text"):
        EmbeddedTextEmotion.load(tmp_path)


def test_embedded_empty_text_has_no_opinion(text_model):
    for text in ("", "   ", "\n\t", "?!..."):
        assert text_model.predict(text) is None
    probs, has = text_model.predict_proba(["", "hello there"])
    assert has.tolist() == [False, True] and probs[0].sum() == 0


def test_embedded_batch_equals_single(text_model):
    texts = ["i can't believe you did that to me", "thank you so much this is wonderful", "ok",
             "", "i'm scared of what happens next", "that smell makes me sick"]
    batch = text_model.predict_batch(texts)
    for text, b in zip(texts, batch):
        s = text_model.predict(text)
        assert (s is None) == (b is None)
        if s is not None:
            assert abs(sum(s.values()) - 1) < 1e-5
            assert all(abs(s[k] - b[k]) < 1e-4 for k in LABELS)


def test_embedded_reads_obvious_emotions(text_model):
    cases = {"thank you so much i love it": "happy", "i am so angry at you right now": "angry",
             "my dog died yesterday and i miss him": "sad"}
    for text, label in cases.items():
        p = text_model.predict(text)
        assert max(p, key=p.get) == label, (text, p)


@pytest.mark.slow
@pytest.mark.corpus("evaluates the shipped text model on labelled GoEmotions and MELD rows")
def test_shipped_model_beats_majority_on_real_rows(text_model, goemotions, meld):
    from streamer.train.texteval import evaluate_rows
    from streamer.train.textdata import read_goemotions, read_tsv

    for rows in (read_goemotions(goemotions, "test").single().head(400),
                 read_tsv(meld / "dev.tsv").head(400)):
        y = rows.labels()
        majority = np.bincount(y, minlength=len(LABELS)).max() / len(y)
        rep = evaluate_rows(text_model, rows)["asr"]
        assert rep["accuracy"] > majority + 0.05, (rows.source, rep["accuracy"], majority)
        assert rep["macro_f1"] > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["lora", "full"])
@pytest.mark.corpus("trains the text model on GoEmotions and MELD rows")
def test_tiny_training_run_learns(tmp_path, goemotions, meld, encoder):
    """A short run on real rows (LoRA; full fine-tuning without the word embeddings): it saves
    what the product loads, and it learns."""
    from streamer.text.load import load_text_emotion
    from streamer.train.text import TextTrainConfig, train

    class Quiet:
        def task(self, name, total):
            return lambda n=1: None

        def message(self, text):
            pass

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy 2-core machine are several times slower
    cfg = TextTrainConfig(goemotions=str(goemotions), meld=str(meld), epochs=1, encoder=encoder,
                          freeze_word_embeddings=encoder == "full", dev_sets=("goemotions",),
                          max_rows=256, batch_size=16, max_length=32, evals_per_epoch=1,
                          lr=1e-3 if encoder == "lora" else 5e-5, head_lr=5e-3)
    try:
        rec = train(cfg, tmp_path / "m", Quiet())
    finally:
        torch.set_num_threads(threads)
    losses = [h["loss"] for h in rec["history"]]
    assert rec["rows"]["train"] > 200 and losses
    assert set(rec["rows"]) == {"train", "goemotions-dev"}  # MELD dev is not used for selection
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    part = {"lora": "adapter/adapter_config.json", "full": "encoder.safetensors"}[encoder]
    assert saved["encoder"] == encoder and (tmp_path / "m" / part).is_file()
    model = load_text_emotion(str(tmp_path / "m"))
    p = model.predict("thank you so much")
    assert abs(sum(p.values()) - 1) < 1e-5


@pytest.mark.slow
def test_eval_text_cli(tmp_path, text_model):
    tsv = tmp_path / "calls.tsv"
    tsv.write_text("I'm SO happy, thank you!!\tjoy\nThis is outrageous. I want a refund NOW.\tanger\n"
                   "my cat passed away last night\tsadness\nwhat time is it\tneutral\n...\tneutral\n")
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "streamer.cli.eval_text", "--tsv", str(tsv), "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    for kind in ("raw", "asr"):
        assert set(report[kind]) >= {"accuracy", "macro_f1", "n", "per_class_recall", "confusion"}
        assert report[kind]["n"] == 5 and report[kind]["no_opinion"] == 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("hello\tboredom\n")
    res = subprocess.run([sys.executable, "-m", "streamer.cli.eval_text", "--tsv", str(bad), "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error:") and "boredom" in res.stderr


@pytest.fixture(scope="module")
def built_text_model():
    from streamer.text.emotion import DEFAULT_MODEL_DIR
    from streamer.text.torch_text import EmbeddedTextEmotion

    return EmbeddedTextEmotion.load(DEFAULT_MODEL_DIR, compiled=False)


def test_traced_network_matches_eager(built_text_model):
    m = built_text_model
    texts = ["ok", "i can't believe you did that to me after everything we went through together", "thank you"]
    traced = m.logits(texts)
    run, m.run = m.run, m.net
    try:
        eager = m.logits(texts)
    finally:
        m.run = run
    assert np.allclose(traced, eager, atol=1e-4)


TEXTS = ["ok", "i can't believe you did that to me after everything we went through together", "thank you",
         "Héllo WORLD, 42 naïve cafés!", " ".join(["really"] * 100)]  # the last is truncated to max_length


def test_compiled_text_model_equals_the_built_one(built_text_model, tmp_path, monkeypatch):
    from streamer.text.emotion import DEFAULT_MODEL_DIR
    from streamer.text.torch_text import EmbeddedTextEmotion, encode_texts

    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path))
    compiled = EmbeddedTextEmotion.load(DEFAULT_MODEL_DIR)  # built in a child process, then loaded
    assert compiled.net is None and len(list((tmp_path / ".compiled").glob("text-emotion-*.pt"))) == 1
    a, b = encode_texts(built_text_model.tokenizer, TEXTS, 64), encode_texts(compiled.tokenizer, TEXTS, 64)
    assert a["input_ids"].tolist() == b["input_ids"].tolist()
    assert a["attention_mask"].tolist() == b["attention_mask"].tolist()
    assert np.allclose(built_text_model.logits(TEXTS), compiled.logits(TEXTS), atol=1e-5)
    # a process that loads the compiled model never imports transformers or peft
    code = ("import sys; from streamer.text.load import load_text_emotion; m = load_text_emotion(); "
            "m.predict('thank you'); print(sorted(k for k in ('transformers', 'peft') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "SER_MODELS_DIR": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_unreadable_compiled_file_is_rebuilt(tmp_path, monkeypatch, caplog):
    from streamer.text.compiled import compiled_path
    from streamer.text.emotion import DEFAULT_MODEL_DIR, base_folder
    from streamer.text.torch_text import EmbeddedTextEmotion

    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path))
    target = compiled_path(DEFAULT_MODEL_DIR, base_folder("embedded:all-MiniLM-L6-v2"))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a torchscript file")
    m = EmbeddedTextEmotion.load(DEFAULT_MODEL_DIR)
    assert "unusable" in caplog.text
    assert m.predict("thank you so much") is not None and target.stat().st_size > 10_000_000


def test_compiled_file_follows_the_model_files(tmp_path):
    import shutil

    from streamer.text.compiled import compiled_path
    from streamer.text.emotion import DEFAULT_MODEL_DIR, base_folder

    base = base_folder("embedded:all-MiniLM-L6-v2")
    copy = tmp_path / "text-emotion"
    shutil.copytree(DEFAULT_MODEL_DIR, copy)
    assert compiled_path(copy, base) == compiled_path(DEFAULT_MODEL_DIR, base)  # same files, same key
    head = copy / "head.pt"
    head.write_bytes(head.read_bytes() + b"\0")
    assert compiled_path(copy, base) != compiled_path(DEFAULT_MODEL_DIR, base)
    assert compiled_path(copy, "some-hub/name") is None


def make_base_encoder(folder):
    """A small random BERT encoder with the MiniLM tokenizer, saved as a local base folder."""
    import torch

    from streamer.text.emotion import EMBEDDED_BASE, base_folder

    tok = transformers.AutoTokenizer.from_pretrained(base_folder(EMBEDDED_BASE))
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_full_fine_tune_saves_only_trained_tensors_in_fp16(tmp_path, monkeypatch):
    """encoder = "full" with frozen word embeddings: the folder holds the trained tensors (fp16,
    no word embeddings) + head; built and compiled loads give the trained network's outputs."""
    import torch
    from safetensors import safe_open

    from streamer.text.emotion import ENCODER_DELTA

    from streamer.text.torch_text import EmbeddedTextEmotion, build_classifier
    from streamer.text.load import load_text_emotion
    from streamer.train.text import TextTrainConfig, _build, save

    base = make_base_encoder(tmp_path / "base")
    cfg = TextTrainConfig(base=str(base), encoder="full", freeze_word_embeddings=True, max_length=32)
    tokenizer, net, _ = _build(cfg)
    plain = build_classifier(transformers.AutoModel.from_pretrained(str(base)))
    plain.head.load_state_dict(net.head.state_dict())
    untouched = EmbeddedTextEmotion(plain, tokenizer, 1.25, 32, "base", trace=False)
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: move every trainable tensor
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    out = tmp_path / "m"
    save(net, out, cfg, temperature=1.25)
    with safe_open(str(out / ENCODER_DELTA), "pt") as f:
        names = set(f.keys())
        assert all(f.get_tensor(n).dtype == torch.float16 for n in names)
    assert "embeddings.word_embeddings.weight" not in names and "encoder.layer.1.output.dense.weight" in names
    assert not (out / "encoder").exists() and json.loads((out / "config.json").read_text())["encoder"] == "full"

    texts = ["thank you so much", "i can't believe you did that", "ok"]
    trained = EmbeddedTextEmotion(net, tokenizer, 1.25, 32, "trained", trace=False).logits(texts)
    built = EmbeddedTextEmotion.load(out, compiled=False)
    assert np.allclose(built.logits(texts), trained, atol=2e-2)  # fp16 weights
    assert not np.allclose(untouched.logits(texts), trained, atol=2e-2)  # the delta matters
    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path / "cache"))
    compiled = EmbeddedTextEmotion.load(out)
    assert compiled.net is None and np.allclose(compiled.logits(texts), built.logits(texts), atol=1e-5)
    assert abs(sum(load_text_emotion(str(out)).predict("thank you").values()) - 1) < 1e-5


def test_delta_for_another_base_is_a_clear_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    from streamer.text.emotion import ENCODER_DELTA

    from streamer.text.torch_text import EmbeddedTextEmotion
    from streamer.train.text import TextTrainConfig, _build, save

    base = make_base_encoder(tmp_path / "base")
    cfg = TextTrainConfig(base=str(base), encoder="full", freeze_word_embeddings=True, max_length=32)
    _, net, _ = _build(cfg)
    save(net, tmp_path / "m", cfg, temperature=1.0)
    save_file({"encoder.layer.0.output.dense.weight": torch.zeros(3, 3, dtype=torch.float16)}, str(tmp_path / "m" / ENCODER_DELTA))
    with pytest.raises(ModelError, match="encoder.layer.0.output.dense.weight .*another base"):
        EmbeddedTextEmotion.load(tmp_path / "m", compiled=False)
