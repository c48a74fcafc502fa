"""Speaker encoders: variable-length input, masks, resemblyzer's weights against the package, and
save → load → identical embeddings of an audio model from recordings on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import twinnet
from twinnet.encoders import ENCODERS
from twinnet.encoders.speaker import masked_stats, partial_slices

SMALL = {"xvector": {"channels": 16, "embedding_dim": 8, "n_mels": 24},
         "ecapa": {"channels": 16, "embedding_dim": 8, "n_mels": 24, "attention": 8}}  # fmt: skip


def audio_model(name: str = "xvector", **params: object) -> twinnet.TwinNetwork:
    encoder = {"name": name, "params": {**SMALL.get(name, {}), **params}}
    config = {"input": {"kind": "audio", "sample_rate": 16000}, "encoder": encoder,
              "comparator": {"name": "cosine"}, "normalize": True}  # fmt: skip
    return twinnet.build_model(twinnet.ModelConfig.model_validate(config)).eval()  # type: ignore[return-value]


@pytest.mark.parametrize("name", ["xvector", "ecapa"])
def test_any_length_and_padding_is_ignored(name: str) -> None:
    torch.manual_seed(0)
    model = audio_model(name)
    speech = torch.randn(8000) * 0.1
    with torch.no_grad():
        z_short = model.embed(speech[None])
        z_long = model.embed(torch.randn(1, 40000) * 0.1)
        z_padded = model.embed(torch.cat([speech, torch.zeros(4000)])[None])
    assert z_short.shape == z_long.shape == (1, 8)
    # trailing zeros are trimmed as silence (only the edge frame and the mean differ a little)
    assert torch.nn.functional.cosine_similarity(z_short, z_padded).item() > 0.9
    # frames outside the mask (the frontend zeroes them) change nothing
    feats = torch.randn(2, 24, 40)
    padded = torch.cat([feats, torch.zeros(2, 24, 25)], 2)
    mask = torch.arange(65)[None].expand(2, -1) < 40
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.body(padded, mask), model.encoder.body(feats, mask[:, :40]),
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
    assert name in ENCODERS


def test_masked_stats_against_numpy() -> None:
    h = torch.randn(2, 3, 7)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out = masked_stats(h, mask).numpy()
    ref = h[1, :, :4].numpy()
    np.testing.assert_allclose(out[1], np.r_[ref.mean(1), ref.std(1)], rtol=1e-5, atol=1e-6)


def test_partial_slices_as_resemblyzer() -> None:
    assert partial_slices(16000) == [(0, 160)]  # a 1 s clip: one 1.6 s partial (zero-padded)
    slices = partial_slices(16000 * 5)
    assert slices[0] == (0, 160) and slices[1] == (77, 237)


def test_resemblyzer_parity_with_the_package() -> None:
    pytest.importorskip("resemblyzer", reason="the resemblyzer extra")
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

    package = VoiceEncoder("cpu", verbose=False)
    ours = ENCODERS.build("resemblyzer", {"vad_db": None}).eval()
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    wav = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.normal(size=t.shape)
    wav = wav.astype(np.float32)
    mel = wav_to_mel_spectrogram(wav)  # librosa's mel: our frontend must give the same
    with torch.no_grad():
        ours_mel = ours.mel(torch.from_numpy(wav)[None])[0].T.numpy()
        np.testing.assert_allclose(ours_mel, mel, rtol=1e-3, atol=1e-4 * mel.max())
        mels = torch.from_numpy(np.stack([mel[:160], mel[-160:]]))
        torch.testing.assert_close(ours.embed_mels(mels), package(mels), atol=1e-5, rtol=1e-4)
        expected = package.embed_utterance(normalize_volume(wav, -30, increase_only=True))
        got = ours(torch.from_numpy(wav)[None])[0].numpy()
    assert float(got @ expected) > 0.9999


def test_save_load_identical_embeddings_from_files(tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    torch.manual_seed(0)
    model = audio_model("xvector")
    rng = np.random.default_rng(0)
    paths = []
    for i, (rate, seconds) in enumerate([(16000, 1.0), (8000, 0.7), (22050, 1.3)]):
        path = tmp_path / f"clip{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, rng.normal(0, 0.1, int(rate * seconds)).astype(np.float32), rate)
        paths.append(path)
    before = twinnet.embed(model, paths)
    twinnet.save(model, tmp_path / "model")
    loaded = twinnet.load(tmp_path / "model")
    after = twinnet.embed(loaded, paths)
    assert before.shape == (3, 8)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    result = twinnet.verify(loaded, paths[0], paths[1]).to_dict()
    assert result["score"] == pytest.approx(float(torch.dot(after[0], after[1])), abs=1e-5)
