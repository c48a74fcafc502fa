"""The attention encoders: built from configs, attention equal to torch's own, masking, recording."""

import pytest
import torch
import torch.nn.functional as F

from twinnet import TripletLoss, build_model
from twinnet.config import ModelConfig
from twinnet.encoders.attention import AttentionBlock, HasAttention, TrajectoryTransformerEncoder, ViTEncoder
from twinnet.errors import ConfigError


def test_block_attention_equals_torch_scaled_dot_product():
    torch.manual_seed(0)
    block = AttentionBlock(dim=16, heads=4, mlp_ratio=2.0, dropout=0.0).eval()
    x = torch.randn(3, 7, 16)
    block.keep = True
    out = block(x)
    q, k, v = block.qkv(block.norm1(x)).reshape(3, 7, 3, 4, 4).permute(2, 0, 3, 1, 4)
    reference = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 7, 16)
    expected = x + block.proj(reference)
    expected = expected + block.mlp(block.norm2(expected))
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(block.attention.sum(-1), torch.ones(3, 4, 7), atol=1e-6)


@pytest.mark.parametrize(
    "stem,pool,grid", [("patch", "mean", (7, 7)), ("conv", "cls", (7, 7)), ("patch", "cls", (7, 7))]
)
def test_vit_from_a_config_and_its_attention(stem, pool, grid):
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.model_validate(
            {
                "input": {"kind": "image", "channels": 1, "size": [28, 28]},
                "encoder": {"name": "vit", "params": {"stem": stem, "pool": pool, "dim": 32, "depth": 2}},
                "normalize": True,
            }
        )
    )
    encoder = model.encoder_for("a")
    assert isinstance(encoder, HasAttention) and encoder.token_grid() == grid
    encoder.keep_attention = True
    z = model.embed(torch.rand(2, 1, 28, 28))
    assert z.shape == (2, 64) and torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)
    maps = encoder.attention_maps()
    tokens = grid[0] * grid[1] + (pool == "cls")
    assert len(maps) == 2 and maps[0].shape == (2, 4, tokens, tokens)
    encoder.keep_attention = False
    with pytest.raises(RuntimeError, match="keep_attention"):
        encoder.attention_maps()


def test_vit_refuses_sizes_that_do_not_fit_naming_the_field():
    config = {"input": {"kind": "image", "size": [30, 30]}, "encoder": {"name": "vit", "params": {"patch": 4}}}
    with pytest.raises(ConfigError, match=r"model\.encoder\.params.*not a multiple of patch 4"):
        build_model(ModelConfig.model_validate(config))
    with pytest.raises(ConfigError, match="multiple of heads"):
        build_model(
            ModelConfig.model_validate({"input": {"kind": "image"}, "encoder": {"name": "vit", "params": {"dim": 30}}})
        )
    with pytest.raises(ValueError, match="pool must be cls or mean"):
        ViTEncoder(pool="max")


def test_trajectory_transformer_masks_padding():
    torch.manual_seed(0)
    encoder = TrajectoryTransformerEncoder(in_features=5, dim=16, heads=2, depth=2, downsample=2, dropout=0.0).eval()
    x = torch.randn(2, 5, 64)
    lengths = torch.tensor([64, 40])
    other = x.clone()
    other[1, :, 48:] = 100.0  # only padding (beyond the stem's reach of step 40) changes
    encoder.keep_attention = True
    a = encoder(x, lengths)
    attention = encoder.attention_maps()[0]
    b = encoder(other, lengths)
    assert a.shape == (2, 64)
    assert torch.allclose(a, b, atol=1e-5)
    assert encoder.token_grid() == (1, 16)
    # no token attends to a padded step (40 steps → 10 after two stride-2 convolutions)
    assert torch.all(attention[1, :, :, 10:] == 0)
    assert not torch.allclose(encoder(other), a)  # without lengths the padding counts


def test_trajectory_transformer_from_a_sequence_config_trains():
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.model_validate(
            {
                "input": {"kind": "sequence", "features": 3, "length": 32},
                "encoder": {
                    "name": "trajectory_transformer",
                    "params": {"dim": 16, "heads": 2, "depth": 1, "dropout": 0.0},
                },
                "normalize": True,
            }
        )
    )
    x = torch.randn(8, 3, 32)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    loss_fn = TripletLoss(margin=0.5, mining="all")
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(10):
        loss = loss_fn(model.embed(x), labels)
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[-1] < 0.5 * losses[0]
