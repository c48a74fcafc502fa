import pytest
import torch

from twinnet import HalfTwinNetwork, TwinNetwork, build_model
from twinnet.config import ModelConfig
from twinnet.encoders import Conv4Encoder, KochEncoder, MLPEncoder, register_encoder
from twinnet.errors import ConfigError


def test_both_branches_are_one_module_and_one_step_changes_them_identically():
    torch.manual_seed(0)
    net = TwinNetwork(MLPEncoder(in_features=10, hidden=(16,), embedding_dim=4), "euclidean")
    x1, x2 = torch.randn(8, 10), torch.randn(8, 10)
    probe = torch.randn(3, 10)
    before = net.embed(probe).detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(x1, x2).sum().backward()
    # one parameter set: gradients from both branches land on the same tensors
    assert len(list(net.parameters())) == len(list(net.encoder.parameters()))
    opt.step()
    net.eval()
    after_as_first = net(probe, torch.zeros(3, 10))
    after_as_second = net(torch.zeros(3, 10), probe)
    torch.testing.assert_close(after_as_first, after_as_second)
    assert not torch.allclose(net.embed(probe), before)


def test_forward_is_symmetric_and_matches_embeddings():
    torch.manual_seed(0)
    net = TwinNetwork(MLPEncoder(in_features=6, hidden=(8,), embedding_dim=3), "cosine").eval()
    a, b = torch.randn(5, 6), torch.randn(5, 6)
    torch.testing.assert_close(net(a, b), net(b, a))
    torch.testing.assert_close(net(a, b), torch.nn.functional.cosine_similarity(net.embed(a), net.embed(b)))


def test_normalize_gives_unit_embeddings():
    net = TwinNetwork(MLPEncoder(in_features=6, embedding_dim=5), "euclidean", normalize=True).eval()
    norms = net.embed(torch.randn(4, 6)).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(4))


@pytest.mark.parametrize("size", [8, 28, 37, 105])
@pytest.mark.parametrize("channels", [1, 3])
def test_conv4_takes_any_size_and_channels(size, channels):
    enc = Conv4Encoder(in_channels=channels, input_size=size, hidden=8, embedding_dim=16).eval()
    assert enc(torch.rand(2, channels, size, size)).shape == (2, 16)


@pytest.mark.parametrize("channels", [1, 3])
def test_koch_encoder_shapes(channels):
    enc = KochEncoder(in_channels=channels, input_size=105, embedding_dim=32, width=0.125).eval()
    out = enc(torch.rand(2, channels, 105, 105))
    assert out.shape == (2, 32)
    assert ((out >= 0) & (out <= 1)).all()  # sigmoid output, as in the paper


def test_half_twin_shares_named_part_only():
    torch.manual_seed(0)
    f = Conv4Encoder(1, 16, hidden=8, embedding_dim=4)
    g = Conv4Encoder(1, 16, hidden=8, embedding_dim=4)
    net = HalfTwinNetwork(f, g, "euclidean", share=["features"])
    assert net.encoder_a.features is net.encoder_b.features
    assert net.encoder_a.head is not net.encoder_b.head
    shared_before = net.encoder_a.features[0].weight.detach().clone()
    head_b_before = net.encoder_b.head[1].weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)).sum().backward()
    opt.step()
    assert not torch.equal(net.encoder_b.features[0].weight, shared_before)
    assert torch.equal(net.encoder_a.features[0].weight, net.encoder_b.features[0].weight)
    assert not torch.equal(net.encoder_b.head[1].weight, head_b_before)


def test_half_twin_share_with_mismatched_shapes_is_a_config_error():
    with pytest.raises(ConfigError, match="differs in shape"):
        HalfTwinNetwork(Conv4Encoder(1, 16, hidden=8), Conv4Encoder(1, 16, hidden=4), share=["features"])


def test_build_model_from_config_and_registered_custom_encoder():
    @register_encoder("test_tiny")
    class Tiny(torch.nn.Module):
        def __init__(self, in_features: int, embedding_dim: int = 3):
            super().__init__()
            self.fc = torch.nn.Linear(in_features, embedding_dim)
            self.output_dim = embedding_dim

        def forward(self, x):
            return self.fc(x.flatten(1))

    cfg = ModelConfig.model_validate(
        {
            "input": {"kind": "vector", "features": 7},
            "encoder": {"name": "test_tiny", "params": {"embedding_dim": 5}},
            "comparator": {"name": "mahalanobis", "params": {"rank": 3}},
        }
    )
    net = build_model(cfg)
    assert net(torch.randn(2, 7), torch.randn(2, 7)).shape == (2,)
    assert net.comparator.L.shape == (3, 5)


def test_unknown_encoder_or_parameter_names_the_problem():
    with pytest.raises(ConfigError, match="unknown encoder 'nope'"):
        build_model(ModelConfig.model_validate({"encoder": {"name": "nope"}}))
    with pytest.raises(ConfigError, match="hiden"):
        build_model(ModelConfig.model_validate({"encoder": {"name": "conv4", "params": {"hiden": 3}}}))


def test_half_twin_from_config():
    cfg = ModelConfig.model_validate(
        {
            "input": {"size": [16, 16]},
            "encoder": {"name": "conv4", "params": {"hidden": 8, "embedding_dim": 4}},
            "encoder_b": {"name": "conv4", "params": {"hidden": 8, "embedding_dim": 4}},
            "share": ["features"],
        }
    )
    net = build_model(cfg)
    assert isinstance(net, HalfTwinNetwork)
    assert net.encoder_a.features is net.encoder_b.features


def test_a_bad_encoder_parameter_names_the_encoder_field_of_its_side():
    # constructors raise plain ValueError; building from a config names the field it came from
    base = {"input": {"kind": "vector", "features": 8}, "encoder": {"name": "mlp", "params": {"embedding_dim": 4}}}
    with pytest.raises(ConfigError, match=r"^model.encoder.params \(encoder 'mlp'\): unknown parameter"):
        build_model(ModelConfig.model_validate({**base, "encoder": {"name": "mlp", "params": {"widht": 3}}}))
    half = {**base, "encoder_b": {"name": "small_text", "params": {"pooling": "median"}}}
    with pytest.raises(ConfigError, match=r"^model.encoder_b.params \(encoder 'small_text'\)"):
        build_model(ModelConfig.model_validate(half), texts=["a b", "c d"])
    with pytest.raises(ConfigError, match=r"^model.encoder_b.name: unknown encoder 'nope'"):
        build_model(ModelConfig.model_validate({**base, "encoder_b": {"name": "nope"}}))


# (encoder, input spec) of every built-in image, vector and sequence encoder, small enough to build fast
SIZED_ENCODERS = [
    ("conv4", {"size": [8, 8]}, {"hidden": 4, "blocks": 2}),
    ("koch", {"size": [48, 48]}, {"width": 0.05}),
    ("mlp", {"kind": "vector", "features": 6}, {"hidden": [4]}),
    ("signet", {"size": [40, 60]}, {"width": 0.05, "hidden": 8}),
    ("tdnn", {"kind": "sequence", "features": 3, "length": 16}, {"channels": [4]}),
    ("gru", {"kind": "sequence", "features": 3, "length": 16}, {"hidden": 4}),
]


@pytest.mark.parametrize("dim", [0, -3])
@pytest.mark.parametrize(("name", "spec", "params"), SIZED_ENCODERS, ids=[e[0] for e in SIZED_ENCODERS])
def test_a_non_positive_embedding_dim_is_a_config_error_naming_it(name, spec, params, dim):
    config = ModelConfig.model_validate(
        {"input": spec, "encoder": {"name": name, "params": {**params, "embedding_dim": dim}}}
    )
    # before: a 0-wide layer was built (every embedding empty) or torch raised "negative dimension"
    with pytest.raises(
        ConfigError, match=rf"^model.encoder.params \(encoder '{name}'\): embedding_dim must be at least 1"
    ):
        build_model(config)


def test_small_text_and_half_twin_sizes_name_their_side():
    config = ModelConfig.model_validate(
        {
            "input": {"kind": "text"},
            "encoder": {"name": "small_text", "params": {"embedding_dim": 8, "token_dim": 4, "hidden": 4}},
            "encoder_b": {"name": "small_text", "params": {"embedding_dim": 0}},
        }
    )
    with pytest.raises(ConfigError, match=r"^model.encoder_b.params \(encoder 'small_text'\): embedding_dim must"):
        build_model(config, texts=["a b", "c d"])


@pytest.mark.parametrize(
    ("params", "message"),
    [({"hidden": 0}, "hidden must be at least 1"), ({"blocks": -1}, "blocks must be at least 1"),
     ({"embedding_dim": 2.5}, "embedding_dim must be a positive whole number"),
     ({"embedding_dim": True}, "embedding_dim must be a positive whole number")],
)  # fmt: skip
def test_other_encoder_sizes_are_checked_too(params, message):
    with pytest.raises(ConfigError, match=message):
        build_model(
            ModelConfig.model_validate({"input": {"size": [8, 8]}, "encoder": {"name": "conv4", "params": params}})
        )


def test_an_embedding_size_that_cannot_be_allocated_is_a_config_error_naming_the_encoder():
    config = ModelConfig.model_validate(
        {"input": {"kind": "vector", "features": 8}, "encoder": {"name": "mlp", "params": {"embedding_dim": 10**14}}}
    )
    # 8 × 10^14 float32 weights: torch's allocator refuses at once (a RuntimeError naming no field, before)
    with pytest.raises(ConfigError, match=r"^model.encoder: cannot build encoder 'mlp' .*allocate"):
        build_model(config)
