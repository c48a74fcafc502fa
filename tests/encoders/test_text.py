"""Text encoders and text twins: the packaged MiniLM against sentence-transformers, the small
from-scratch encoder, half-twins sharing embeddings, saving/loading, truncation, empty texts."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import twinnet
from twinnet.config import ModelConfig
from twinnet.encoders.text import SmallTextEncoder, WordVocabulary, default_text_model
from twinnet.errors import ConfigError, DataError
from twinnet.inference import embed_texts

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar.",
    "The stock market fell sharply on Monday.",
    "",
    "Ünïcödé and punctuation!?",
]


def text_config(**extra) -> ModelConfig:
    data = {"input": {"kind": "text"}, "encoder": {"name": "text"}, "comparator": {"name": "cosine"}, **extra}
    return ModelConfig.model_validate(data)


@pytest.fixture(scope="module")
def minilm() -> twinnet.TwinNetwork:
    return twinnet.build_model(text_config()).eval()


def test_packaged_minilm_matches_sentence_transformers(minilm):
    """The reference: sentence-transformers' own encode of the same packaged model directory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(default_text_model()), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_tensor=True, batch_size=2)
    got = embed_texts(minilm, SENTENCES, batch_size=2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert minilm.encoder.pooling == "mean" and minilm.encoder.normalize and minilm.encoder.max_length == 256


def test_embed_texts_keeps_input_order_across_batch_sizes(minilm):
    one = embed_texts(minilm, SENTENCES, batch_size=1)
    many = embed_texts(minilm, SENTENCES, batch_size=4)
    torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(one[3]).all()  # the empty text has an embedding


def test_long_text_is_truncated_with_a_note(minilm):
    long = "word " * 2000
    result = twinnet.verify(minilm, "short text", long)
    assert any("truncated to the model's max_length 256" in n for n in result.notes)
    assert minilm.encoder.tokenize([long])["input_ids"].shape[1] == 256
    assert "notes" not in twinnet.verify(minilm, "a", "b").to_dict()


def test_text_model_refuses_non_strings(minilm):
    with pytest.raises(DataError, match="takes strings"):
        twinnet.verify(minilm, "a", 3)
    with pytest.raises(DataError, match="list of strings"):
        minilm.encoder("just one string")


def test_saved_text_model_is_self_contained(minilm, tmp_path, monkeypatch):
    twinnet.save(minilm, tmp_path / "m")
    assert (tmp_path / "m" / "assets" / "encoder" / "tokenizer.json").is_file()
    # loading needs neither the packaged model directory nor its weights: only the saved files
    import twinnet.encoders.text as text_module

    monkeypatch.setattr(text_module, "default_text_model", lambda: (_ for _ in ()).throw(AssertionError("used")))
    loaded = twinnet.load(tmp_path / "m")
    torch.testing.assert_close(embed_texts(loaded, SENTENCES), embed_texts(minilm, SENTENCES))
    assert loaded.fingerprint == minilm.fingerprint


def test_text_model_can_be_deep_copied(minilm):
    import copy

    clone = copy.deepcopy(minilm)
    torch.testing.assert_close(embed_texts(clone, SENTENCES[:2]), embed_texts(minilm, SENTENCES[:2]))


def test_pooling_and_projection_options():
    model = twinnet.build_model(text_config(encoder={"name": "text", "params": {"pooling": "cls", "projection": 64,
                                                                               "normalize": False}}))  # fmt: skip
    z = embed_texts(model, SENTENCES[:2])
    assert z.shape == (2, 64) and not torch.allclose(z.norm(dim=1), torch.ones(2))
    with pytest.raises(ConfigError, match="pooling"):
        twinnet.build_model(text_config(encoder={"name": "text", "params": {"pooling": "median"}}))
    with pytest.raises(ConfigError, match="not a model directory"):
        twinnet.build_model(text_config(encoder={"name": "text", "params": {"path": "/nonexistent/model"}}))


def test_half_twin_shares_token_embeddings(tmp_path):
    config = text_config(encoder_b={"name": "text"}, share=["transformer.embeddings"])
    model = twinnet.build_model(config)
    assert isinstance(model, twinnet.HalfTwinNetwork)
    assert model.encoder_a.transformer.embeddings is model.encoder_b.transformer.embeddings
    assert model.encoder_a.transformer.encoder is not model.encoder_b.transformer.encoder
    with torch.no_grad():  # make the two towers differ, so sides matter
        model.encoder_b.transformer.encoder.layer[0].output.dense.bias.add_(0.5)
    q = embed_texts(model, SENTENCES[:2], side="a")
    d = embed_texts(model, SENTENCES[:2], side="b")
    assert not torch.allclose(q, d)
    twinnet.save(model, tmp_path / "half")
    loaded = twinnet.load(tmp_path / "half")
    assert loaded.encoder_a.transformer.embeddings is loaded.encoder_b.transformer.embeddings
    torch.testing.assert_close(embed_texts(loaded, SENTENCES[:2], side="b"), d)


def test_word_vocabulary_is_deterministic():
    texts = ["the cat sat", "The dog sat!", "a cat"]
    v = WordVocabulary.fit(texts)
    assert v.words[:2] == ["[PAD]", "[UNK]"]
    assert v.words[2:5] == ["cat", "sat", "the"]  # by count, then alphabetically
    assert v.encode("THE unseen cat", 10) == [v.ids["the"], v.UNK, v.ids["cat"]]
    assert v.encode("", 10) == [v.UNK]
    assert v.encode("a b c d", 2) == [v.ids["a"], v.UNK]
    assert WordVocabulary.from_json(v.to_json()).words == v.words
    assert len(WordVocabulary.fit(texts, max_size=4)) == 4
    hashed = WordVocabulary.fit(texts, oov_buckets=100)
    assert len(hashed) == len(v) + 100
    a, b = hashed.encode("zebra", 5), hashed.encode("a zebra", 5)
    assert a[0] >= len(hashed.words) and b[1] == a[0]  # the same unseen word, the same bucket
    assert WordVocabulary.from_json(hashed.to_json()).encode("zebra", 5) == a


def test_small_text_encoder_round_trip(tmp_path):
    config = ModelConfig.model_validate({"input": {"kind": "text", "max_length": 8}, "encoder": {"name": "small_text",
                                         "params": {"embedding_dim": 32, "token_dim": 16, "hidden": 16}},
                                         "comparator": {"name": "cosine"}})  # fmt: skip
    with pytest.raises(ConfigError, match="vocabulary from the training texts"):
        twinnet.build_model(config)
    model = twinnet.build_model(config, texts=SENTENCES).eval()
    assert isinstance(model.encoder, SmallTextEncoder) and model.encoder.max_length == 8
    z = embed_texts(model, SENTENCES)
    assert z.shape == (5, 32) and torch.isfinite(z).all()
    # padding must not change a text's embedding (packed GRU, masked pooling)
    alone = embed_texts(model, SENTENCES[:1])
    torch.testing.assert_close(alone[0], z[0], atol=1e-5, rtol=1e-5)
    twinnet.save(model, tmp_path / "small")
    loaded = twinnet.load(tmp_path / "small")
    torch.testing.assert_close(embed_texts(loaded, SENTENCES), z)
    np.testing.assert_array_equal(
        loaded.encoder.tokenize(["a man is playing"])["input_ids"],
        model.encoder.tokenize(["a man is playing"])["input_ids"],
    )


def test_trainable_layers_freezes_the_embeddings_and_lower_layers_and_their_gradients():
    model = twinnet.build_model(text_config(encoder={"name": "text", "params": {"trainable_layers": 2}})).train()
    transformer = model.encoder.transformer
    blocks = transformer.encoder.layer
    assert all(not p.requires_grad for p in transformer.embeddings.parameters())
    assert all(not p.requires_grad for block in blocks[:-2] for p in block.parameters())
    assert all(p.requires_grad for block in blocks[-2:] for p in block.parameters())
    z = model.embed(SENTENCES[:2])
    z.sum().backward()
    assert all(p.grad is None for block in blocks[:-2] for p in block.parameters())
    assert all(p.grad is not None for p in blocks[-1].parameters())
    # the forward pass is the shipped model's: freezing changes training, not the embeddings
    with torch.no_grad():
        assert torch.allclose(model.eval().embed(SENTENCES[:2]), twinnet.build_model(text_config()).eval().embed(
            SENTENCES[:2]), atol=1e-6)  # fmt: skip
    for bad, match in ((7, "has 6 layers"), (-1, "whole number"), (True, "whole number")):
        with pytest.raises(ConfigError, match=match):
            twinnet.build_model(text_config(encoder={"name": "text", "params": {"trainable_layers": bad}}))
