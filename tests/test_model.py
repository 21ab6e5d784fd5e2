import pytest
import torch

from streamer.audio.model import AttentiveStatsPool, AudioEmotionNet, NetConfig


@pytest.mark.parametrize("inputs,join", [("both", "frames"), ("both", "embedding"), ("whisper", "frames"), ("prosody", "frames")])
def test_output_shape_any_length(inputs, join):
    net = AudioEmotionNet(NetConfig(inputs=inputs, join=join)).eval()
    for t in (26, 125, 300):
        out = net(torch.randn(3, 384, t), torch.randn(3, 18, t), torch.tensor([t, t // 2, 13]))
        assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_padding_does_not_change_the_result():
    torch.manual_seed(0)
    net = AudioEmotionNet(NetConfig()).eval()
    w, p = torch.randn(1, 384, 60), torch.randn(1, 18, 60)
    alone = net(w, p, torch.tensor([60]))
    padded = net(torch.nn.functional.pad(w, (0, 40), value=3.0), torch.nn.functional.pad(p, (0, 40), value=3.0), torch.tensor([60]))
    assert torch.allclose(alone, padded, atol=1e-4)


def test_attention_ignores_padding():
    pool = AttentiveStatsPool(4, 8).eval()
    x = torch.randn(1, 4, 5)
    a = pool(x, torch.tensor([5]))
    b = pool(torch.cat([x, torch.full((1, 4, 3), 100.0)], dim=2), torch.tensor([5]))
    assert torch.allclose(a, b, atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="inputs"):
        NetConfig(inputs="video")
    with pytest.raises(ValueError, match="join"):
        NetConfig(join="late")
