"""Log-mel features against librosa; voice-activity trimming; augmentation shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinnet.audio import AudioAugment, AudioFrontend, LogMel, mel_filterbank, voiced_mask

librosa = pytest.importorskip("librosa")


@pytest.mark.parametrize(("rate", "n_fft", "n_mels"), [(16000, 512, 80), (16000, 400, 40), (8000, 256, 24)])
def test_mel_matrix_equals_librosa(rate: int, n_fft: int, n_mels: int) -> None:
    ours = mel_filterbank(rate, n_fft, n_mels)
    ref = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


def test_log_mel_equals_librosa_melspectrogram() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=t.shape)).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80,
                                         center=True, pad_mode="constant", power=2.0)  # fmt: skip
    ours = LogMel(16000, 512, 400, 160, 80, log=False)(torch.from_numpy(wave)[None])[0].numpy()
    assert ours.shape == ref.shape == (80, 101)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5 * ref.max())
    logged = LogMel(16000, 512, 400, 160, 80)(torch.from_numpy(wave)[None])[0].numpy()
    np.testing.assert_allclose(logged, np.log(ref + 1e-6), atol=2e-3)


def test_voiced_mask_trims_leading_and_trailing_silence() -> None:
    energy = torch.full((2, 30), -20.0)
    energy[0, 10:20] = 0.0  # loud frames 10..19
    energy[0, 14] = -20.0  # a pause inside is kept
    mask = voiced_mask(energy, threshold_db=40.0, min_frames=3)
    assert mask[0].nonzero().flatten().tolist() == list(range(10, 20))
    assert mask[1].all()  # flat energy: every frame is within the threshold


def test_frontend_masks_padding_and_normalises_the_mean() -> None:
    rng = np.random.default_rng(1)
    speech = torch.from_numpy(rng.normal(0, 0.1, 8000).astype(np.float32))
    padded = torch.cat([speech, torch.zeros(8000)])
    front = AudioFrontend(16000, 40).eval()
    feats, mask = front(padded[None])
    assert feats.shape == (1, 40, 101)
    frames = int(mask.sum())
    assert 48 <= frames <= 55  # about the 0.5 s of signal; the zero padding is trimmed as silence
    kept = feats[0][:, mask[0]]
    torch.testing.assert_close(kept.mean(1), torch.zeros(40), atol=1e-4, rtol=0)


def test_augmentation_is_random_and_training_only() -> None:
    torch.manual_seed(0)
    front = AudioFrontend(16000, 40, augment={"crop": [0.5, 0.5]})
    x = torch.randn(4, 16000) * 0.1
    front.train()
    a, _ = front(x)
    assert a.shape[2] == 51  # cropped to 0.5 s
    front.eval()
    b1, _ = front(x)
    b2, _ = front(x)
    torch.testing.assert_close(b1, b2)
    assert b1.shape[2] == 101
    aug = AudioAugment(16000, crop=None, speed=(1.25, 1.25), speed_p=1.0, noise_p=0.0, babble_p=0.0, gain_db=0.0)
    assert aug.wave(x).shape == (4, 12800)
    with pytest.raises(ValueError, match="smaller value comes first"):
        AudioAugment(16000, noise_snr=(30, 5))
