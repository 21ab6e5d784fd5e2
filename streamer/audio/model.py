"""The audio emotion network: small ECAPA-TDNN-style blocks over two frame inputs.

Inputs are (batch, channels, frames) at 50 frames per second with a length per item:
the Whisper encoder frames (384 channels for tiny.en) and the prosodic frame features
(18 channels). Each input goes through its own branch of SE-Res2Net blocks; the branches
are joined frame by frame before attentive statistics pooling (``join="frames"``) or after
pooling each (``join="embedding"``). Padding frames are masked out of every statistic.

>>> net = AudioEmotionNet(NetConfig())
>>> w, p = torch.randn(2, 384, 125), torch.randn(2, 18, 125)
>>> net(w, p, torch.tensor([125, 60])).shape
torch.Size([2, 7])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from streamer.core.labels import LABELS


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, 1, T) float mask, 1 on real frames.

    >>> length_mask(torch.tensor([2, 3]), 4)[:, 0].tolist()
    [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    """
    steps = torch.arange(max_len, device=lengths.device)
    return (steps[None, :] < lengths[:, None]).float().unsqueeze(1)


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over time of (B, C, T) where mask (B, 1, T) sums to 1 per item.

    >>> m, s = masked_mean_std(torch.ones(1, 2, 3), torch.full((1, 1, 3), 1 / 3))
    >>> m.shape, s.shape
    (torch.Size([1, 2]), torch.Size([1, 2]))
    """
    mean = (x * mask).sum(dim=2)
    var = ((x - mean.unsqueeze(2)).pow(2) * mask).sum(dim=2)
    return mean, var.clamp(min=eps).sqrt()


class TDNNBlock(nn.Module):
    """Conv1d -> ReLU -> BatchNorm, 'same' length.

    >>> TDNNBlock(4, 8, 3, 2)(torch.randn(2, 4, 10)).shape
    torch.Size([2, 8, 10])
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.norm = nn.BatchNorm1d(out_ch)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm(F.relu(self.conv(x)))
        return y if mask is None else y * mask


class Res2NetBlock(nn.Module):
    """Split channels into ``scale`` groups; each group adds the previous group's output.

    >>> Res2NetBlock(16, scale=4, kernel=3, dilation=2)(torch.randn(2, 16, 10), torch.ones(2, 1, 10)).shape
    torch.Size([2, 16, 10])
    """

    def __init__(self, channels: int, scale: int, kernel: int, dilation: int) -> None:
        super().__init__()
        assert channels % scale == 0, "channels must divide by scale"
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(TDNNBlock(width, width, kernel, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        parts = torch.chunk(x, self.scale, dim=1)
        out = [parts[0]]
        y = None
        for i, block in enumerate(self.blocks, start=1):
            y = block(parts[i] if y is None else parts[i] + y, mask)
            out.append(y)
        return torch.cat(out, dim=1)


class SEBlock(nn.Module):
    """Squeeze-and-excitation over time, with the squeeze masked to real frames.

    >>> SEBlock(8, 4)(torch.randn(2, 8, 5), torch.full((2, 1, 5), 0.2)).shape
    torch.Size([2, 8, 5])
    """

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv1d(channels, se_channels, 1)
        self.up = nn.Conv1d(se_channels, channels, 1)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        s = (x * weights).sum(dim=2, keepdim=True)
        return x * torch.sigmoid(self.up(F.relu(self.down(s))))


class SERes2NetBlock(nn.Module):
    """1x1 TDNN -> Res2Net -> 1x1 TDNN -> SE, plus the residual; padding frames stay zero.

    >>> SERes2NetBlock(16, scale=4, dilation=2)(torch.randn(2, 16, 7), torch.ones(2, 1, 7)).shape
    torch.Size([2, 16, 7])
    """

    def __init__(self, channels: int, scale: int = 4, kernel: int = 3, dilation: int = 1, se_channels: int = 32) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels, 1)
        self.res2 = Res2NetBlock(channels, scale, kernel, dilation)
        self.tdnn2 = TDNNBlock(channels, channels, 1)
        self.se = SEBlock(channels, se_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.tdnn2(self.res2(self.tdnn1(x, mask), mask), mask)
        return x + self.se(h, mask / mask.sum(dim=2, keepdim=True))


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling with global context; padding frames get no attention.

    >>> AttentiveStatsPool(8, 4)(torch.randn(2, 8, 6), torch.tensor([6, 3])).shape
    torch.Size([2, 16])
    """

    def __init__(self, channels: int, attention: int = 64) -> None:
        super().__init__()
        self.tdnn = TDNNBlock(channels * 3, attention, 1)
        self.score = nn.Conv1d(attention, channels, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        mask = length_mask(lengths, t)
        mean, std = masked_mean_std(x, mask / mask.sum(dim=2, keepdim=True))
        context = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, t), std.unsqueeze(2).expand(-1, -1, t)], dim=1)
        scores = self.score(torch.tanh(self.tdnn(context)))
        scores = scores.masked_fill(mask == 0, float("-inf"))
        mean, std = masked_mean_std(x, F.softmax(scores, dim=2))
        return torch.cat([mean, std], dim=1)


class Branch(nn.Module):
    """One input's stack: TDNN in, SE-Res2Net blocks, multi-layer aggregation.

    >>> Branch(18, 32, (2, 3))(torch.randn(2, 18, 9), torch.tensor([9, 4])).shape
    torch.Size([2, 32, 9])
    """

    def __init__(self, in_ch: int, channels: int, dilations: tuple[int, ...], kernel: int = 5) -> None:
        super().__init__()
        self.inp = TDNNBlock(in_ch, channels, kernel)
        self.blocks = nn.ModuleList(SERes2NetBlock(channels, dilation=d, se_channels=max(8, channels // 4)) for d in dilations)
        self.mfa = TDNNBlock(channels * len(dilations), channels, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, x.shape[2])
        h = self.inp(x * mask, mask)
        outs = []
        for block in self.blocks:
            h = block(h, mask)
            outs.append(h)
        return self.mfa(torch.cat(outs, dim=1), mask)


@dataclass(frozen=True)
class NetConfig:
    """Shape of the network; saved beside the weights."""

    inputs: str = "both"  # "both" | "whisper" | "prosody"
    join: str = "frames"  # "frames" (before pooling) | "embedding" (after)
    whisper_dim: int = 384
    prosody_dim: int = 18
    whisper_channels: int = 128
    prosody_channels: int = 64
    dilations: tuple[int, ...] = (2, 3)
    embedding: int = 128
    dropout: float = 0.3
    n_classes: int = len(LABELS)

    def __post_init__(self) -> None:
        if self.inputs not in ("both", "whisper", "prosody"):
            raise ValueError(f"inputs must be both, whisper or prosody, not {self.inputs!r}")
        if self.join not in ("frames", "embedding"):
            raise ValueError(f"join must be frames or embedding, not {self.join!r}")
        object.__setattr__(self, "dilations", tuple(self.dilations))

    def to_dict(self) -> dict:
        return asdict(self)


class AudioEmotionNet(nn.Module):
    """Standardise inputs, run a branch per input, join, pool, classify (logits)."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.use_whisper = c.inputs in ("both", "whisper")
        self.use_prosody = c.inputs in ("both", "prosody")
        # Standardisation statistics of the training set (filled in by the trainer).
        self.register_buffer("w_mean", torch.zeros(c.whisper_dim))
        self.register_buffer("w_std", torch.ones(c.whisper_dim))
        self.register_buffer("p_mean", torch.zeros(c.prosody_dim))
        self.register_buffer("p_std", torch.ones(c.prosody_dim))
        width = 0
        if self.use_whisper:
            # kernel 1: encoder frames already carry context (self-attention), and a wide
            # kernel on 384 channels would cost more than the rest of the network
            self.whisper = Branch(c.whisper_dim, c.whisper_channels, c.dilations, kernel=1)
            width += c.whisper_channels
        if self.use_prosody:
            self.prosody = Branch(c.prosody_dim, c.prosody_channels, c.dilations)
            width += c.prosody_channels
        if c.join == "frames":
            self.pools = nn.ModuleList([AttentiveStatsPool(width)])
        else:
            self.pools = nn.ModuleList(AttentiveStatsPool(w) for w in self._widths())
        self.norm = nn.BatchNorm1d(width * 2)
        self.drop = nn.Dropout(c.dropout)
        self.embed = nn.Linear(width * 2, c.embedding)
        self.out = nn.Linear(c.embedding, c.n_classes)

    def _widths(self) -> list[int]:
        c = self.config
        return [w for w, used in ((c.whisper_channels, self.use_whisper), (c.prosody_channels, self.use_prosody)) if used]

    def forward(self, whisper: torch.Tensor, prosody: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) from whisper (B, Dw, T), prosody (B, Dp, T), lengths (B,)."""
        feats = []
        if self.use_whisper:
            w = (whisper - self.w_mean[:, None]) / self.w_std[:, None]
            feats.append(self.whisper(w, lengths))
        if self.use_prosody:
            p = (prosody - self.p_mean[:, None]) / self.p_std[:, None]
            feats.append(self.prosody(p, lengths))
        if self.config.join == "frames":
            pooled = self.pools[0](torch.cat(feats, dim=1), lengths)
        else:
            pooled = torch.cat([pool(f, lengths) for pool, f in zip(self.pools, feats)], dim=1)
        h = F.relu(self.embed(self.drop(self.norm(pooled))))
        return self.out(self.drop(h))
