"""Whisper base's encoder alone, exported to ONNX with 8-bit weights: the audio model's second
encoder without CTranslate2's copy of the whole model (its decoder and 52 M of its 72 M
parameters are never used by the emotion model).

The weights are read from the same CTranslate2 ``model.bin`` the embedded Whisper base ships
(:func:`read_ct2`), built into a small torch module (:class:`WhisperEncoder`), checked against
CTranslate2's own float32 encoder, exported, and their MatMul weights quantised to 8 bits in
blocks of 128 (onnxruntime's ``MatMulNBits``, activations stay float). Training-time only:
needs torch, ``onnx`` and ``onnx-ir`` (the ``train`` extra).

``python -m streamer.train.export whisper-base models/whisper-base-encoder``
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from streamer.core.errors import ModelError

# CTranslate2's DataType enum order (include/ctranslate2/types.h)
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16)


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` (binary version 6), by name.

    The layout is CTranslate2's ``ModelSpec._serialize``: version, spec name, revision, then
    per variable its name, rank, dims, dtype and bytes; aliases last (not read)."""
    b = Path(path).read_bytes()
    at = 0

    def take(fmt: str):
        nonlocal at
        v = struct.unpack_from(fmt, b, at)[0]
        at += struct.calcsize(fmt)
        return v

    def string() -> str:
        nonlocal at
        n = take("H")
        s = b[at:at + n - 1].decode("utf-8")
        at += n
        return s

    version = take("I")
    if version != 6:
        raise ModelError(f"{path}: CTranslate2 model format {version}, this reader knows 6")
    string()
    take("I")
    out = {}
    for _ in range(take("I")):
        name = string()
        dims = [take("I") for _ in range(take("B"))]
        dtype = np.dtype(_DTYPES[take("B")])
        size = take("I")
        out[name] = np.frombuffer(b, dtype, size // dtype.itemsize, at).reshape(dims)
        at += size
    return out


def encoder_module(variables: dict[str, np.ndarray]):
    """A torch module computing Whisper's encoder from CTranslate2's ``encoder/*`` variables:
    two GELU convolutions (the second strides by 2), sinusoidal positions, pre-norm
    transformer layers with fused QKV, a final layer norm. Input (B, n_mels, T) log-mel,
    output (B, T // 2 (+1), D)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    enc = {k[len("encoder/"):]: np.asarray(v, np.float32) for k, v in variables.items()
           if k.startswith("encoder/") and v.dtype.kind == "f"}
    heads = int(variables["encoder/num_heads"])
    layers = sum(1 for k in enc if k.endswith("ffn/linear_0/bias"))
    dim = enc["conv1/bias"].shape[0]

    class WhisperEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for k, v in enc.items():
                self.register_buffer(k.replace("/", "__"), torch.from_numpy(v.copy()))

        def w(self, name: str):
            return getattr(self, name.replace("/", "__"))

        def norm(self, x, name: str):
            return F.layer_norm(x, (dim,), self.w(name + "/gamma"), self.w(name + "/beta"), 1e-5)

        def lin(self, x, name: str):
            return F.linear(x, self.w(name + "/weight"), self.w(name + "/bias"))

        def forward(self, mel):
            x = F.gelu(F.conv1d(mel, self.w("conv1/weight"), self.w("conv1/bias"), padding=1))
            x = F.gelu(F.conv1d(x, self.w("conv2/weight"), self.w("conv2/bias"), stride=2, padding=1))
            x = x.transpose(1, 2)
            x = x + self.w("position_encodings/encodings")[: x.shape[1]]
            b, t, hd = x.shape[0], x.shape[1], dim // heads
            for i in range(layers):
                p = f"layer_{i}/"
                q, k, v = self.lin(self.norm(x, p + "self_attention/layer_norm"), p + "self_attention/linear_0").split(dim, -1)
                q, k, v = (z.reshape(b, t, heads, hd).transpose(1, 2) for z in (q, k, v))
                a = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5, -1) @ v
                x = x + self.lin(a.transpose(1, 2).reshape(b, t, dim), p + "self_attention/linear_1")
                x = x + self.lin(F.gelu(self.lin(self.norm(x, p + "ffn/layer_norm"), p + "ffn/linear_0")), p + "ffn/linear_1")
            return self.norm(x, "layer_norm")

    return WhisperEncoder().eval()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _speech_windows() -> list[np.ndarray]:
    """Real speech to check with: windows of the shipped demo call, 0.5-2.5 s, plus 0.5 s of silence."""
    from streamer.audio.io import load_audio

    x = load_audio(Path(__file__).resolve().parents[2] / "demo" / "demo.flac")  # exporting runs in a checkout
    starts = (16000, 64000, 160000, 320000, 480000)
    out = []
    for s, n in zip(starts, (40000, 40000, 24000, 8000, 40000)):
        out.append(np.concatenate([x[s:s + n], np.zeros(8000, np.float32)]).astype(np.float32))
    return out


def export_whisper_base(folder: Path, tolerance: float | None = None, bits: int = 8, block_size: int = 128) -> dict:
    """Write ``encoder.onnx`` and ``encoder.onnx.json`` into ``folder``; fail when the exported
    encoder's frames are further from CTranslate2's float32 frames (relative Frobenius norm,
    worst window of real speech) than ``tolerance``, by default than CTranslate2's own int8
    encoder is (the one the audio head was trained on)."""
    import ctranslate2
    import torch
    from faster_whisper import WhisperModel

    from streamer.audio.encoder import EMBEDDED_BASE, embedded_base_path
    from streamer.audio.onnx_encoder import ENCODER_FILE, ENCODER_META, OnnxEncoder

    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        raise ModelError('exporting the encoder needs onnx and onnx-ir: pip install onnx onnx-ir (or "ser-live[train]")') from exc
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = embedded_base_path()
    variables = read_ct2(source / "model.bin")
    module = encoder_module(variables)
    reference = WhisperModel(str(source), compute_type="float32", cpu_threads=1)
    shipped = WhisperModel(str(source), compute_type="int8", cpu_threads=1)  # what the audio head was trained on
    windows = _speech_windows()
    mels = [reference.feature_extractor(w, padding=160) for w in windows]

    def ct2(model, mel):
        sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))
        return np.asarray(model.model.encode(sv, to_cpu=True), np.float32)[0]

    refs = [ct2(reference, m) for m in mels]
    torch.set_num_threads(1)
    with torch.no_grad():
        torch_err = max(_rel(module(torch.from_numpy(m[None])).numpy()[0], r) for m, r in zip(mels, refs))
    if torch_err > 1e-4:
        raise ModelError(f"export: the torch encoder differs from CTranslate2 float32 by {torch_err:.2e}")
    tmp = folder / (ENCODER_FILE + ".f32.tmp")
    with torch.no_grad():
        torch.onnx.export(module, (torch.from_numpy(mels[0][None]),), str(tmp), dynamo=False, opset_version=17,
                          input_names=["mel"], output_names=["frames"],
                          dynamic_axes={"mel": {0: "batch", 2: "steps"}, "frames": {0: "batch", 1: "frames"}})
    quant = MatMulNBitsQuantizer(onnx.load(str(tmp)), bits=bits, block_size=block_size, is_symmetric=True, accuracy_level=4)
    quant.process()
    onnx.save(quant.model.model, str(folder / ENCODER_FILE))
    tmp.unlink()
    meta = {"format": 1, "source": EMBEDDED_BASE, "source_sha256": hashlib.sha256((source / "model.bin").read_bytes()).hexdigest(),
            "n_mels": int(mels[0].shape[0]), "dim": int(variables["encoder/conv1/bias"].shape[0]),
            "weights": f"MatMul {bits}-bit symmetric, blocks of {block_size} (MatMulNBits, accuracy_level 4); convolutions float32",
            "exported_by": f"python -m streamer.train.export whisper-base {folder.as_posix()}"}
    (folder / ENCODER_META).write_text(json.dumps(meta, indent=1) + "\n")
    runner = OnnxEncoder(folder)
    ours = [runner.encode(w) for w in windows]
    ct2_int8 = [ct2(shipped, m) for m in mels]
    meta["check"] = {
        "windows": len(windows),
        "torch_vs_ct2_float32": torch_err,
        "onnx_vs_ct2_float32": max(_rel(o, r) for o, r in zip(ours, refs)),
        "ct2_int8_vs_ct2_float32": max(_rel(o, r) for o, r in zip(ct2_int8, refs)),
        "onnx_vs_ct2_int8": max(_rel(o, r) for o, r in zip(ours, ct2_int8)),
    }
    (folder / ENCODER_META).write_text(json.dumps(meta, indent=1) + "\n")
    limit = meta["check"]["ct2_int8_vs_ct2_float32"] if tolerance is None else tolerance
    if meta["check"]["onnx_vs_ct2_float32"] > limit:
        raise ModelError(f"export: the 8-bit encoder differs from CTranslate2 float32 by "
                         f"{meta['check']['onnx_vs_ct2_float32']:.3f} (> {limit:.3f})")
    return meta
