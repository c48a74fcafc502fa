"""The audio reader: formats, mixing to mono, resampling, bad files, the duration limit before
decoding, the speaker-folder source and the trial-list reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")

from scipy.signal import resample_poly  # noqa: E402

from twinnet.config import InputSpec  # noqa: E402
from twinnet.data import audio  # noqa: E402
from twinnet.data.audio import audio_folder, decode_audio, read_trials, utterance_of  # noqa: E402
from twinnet.data.sources import read_dataset  # noqa: E402
from twinnet.errors import DataError  # noqa: E402


def tone(freq: float = 440.0, rate: int = 16000, seconds: float = 0.5, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(("suffix", "subtype", "tol"), [(".wav", "PCM_16", 1e-4), (".flac", "PCM_16", 1e-4),
                                                      (".wav", "FLOAT", 1e-7), (".ogg", "VORBIS", 0.05)])  # fmt: skip
def test_formats_read_back(tmp_path: Path, suffix: str, subtype: str, tol: float) -> None:
    wave = tone()
    path = tmp_path / f"clip{suffix}"
    sf.write(path, wave, 16000, subtype=subtype)
    got = decode_audio(path, 16000).numpy()
    assert got.dtype == np.float32 and got.shape == wave.shape
    assert np.abs(got - wave).max() < tol if subtype != "VORBIS" else np.corrcoef(got, wave)[0, 1] > 0.99


def test_mp3_reads_where_libsndfile_has_it(tmp_path: Path) -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3")
    path = tmp_path / "clip.mp3"
    sf.write(path, tone(seconds=1.0), 16000, format="MP3")
    got = decode_audio(path, 16000).numpy()
    assert abs(len(got) - 16000) < 2000 and np.abs(got).max() > 0.1


def test_stereo_is_mixed_to_mono_and_resampled(tmp_path: Path) -> None:
    left, right = tone(300, 8000), tone(500, 8000, amp=0.1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1), 8000, subtype="FLOAT")
    got = decode_audio(path, 16000).numpy()
    expected = resample_poly((left + right) / 2, 2, 1)  # independent reference: mix, then 8 → 16 kHz
    assert len(got) == 2 * len(left)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the 300 Hz tone is still at 300 Hz after resampling (the spectrum's peak)
    spectrum = np.abs(np.fft.rfft(got))
    assert abs(np.argmax(spectrum) * 16000 / len(got) - 300) < 5


def test_44k1_to_16k_length(tmp_path: Path) -> None:
    path = tmp_path / "cd.flac"
    sf.write(path, tone(1000, 44100, seconds=1.0), 44100)
    assert len(decode_audio(path, 16000)) == 16000


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(DataError, match="garbage.wav: not an audio file"):
        decode_audio(garbage)
    with pytest.raises(DataError, match="missing.flac: audio file not found"):
        decode_audio(tmp_path / "missing.flac")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="empty.wav: empty recording"):
        decode_audio(empty)
    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(DataError, match="silent.flac: silent recording"):
        decode_audio(silent)
    with pytest.raises(DataError, match="upload: not an audio file"):
        decode_audio(b"\x00" * 100, name="upload")


def test_duration_limit_is_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, tone(seconds=3.0), 16000)
    calls: list[object] = []
    real_read = sf.read
    monkeypatch.setattr(sf, "read", lambda *a, **k: calls.append(a) or real_read(*a, **k))
    with pytest.raises(DataError, match=r"long.flac: 3.0 s is over the limit of 2 s"):
        decode_audio(path, 16000, max_seconds=2.0)
    assert calls == []  # refused from the header: no sample was decoded
    assert len(decode_audio(path, 16000, max_seconds=4.0)) == 48000
    assert len(calls) == 1
    # the same for bytes (the service's uploads)
    with pytest.raises(DataError, match="over the limit"):
        decode_audio(path.read_bytes(), 16000, max_seconds=2.0, name="upload")
    assert len(calls) == 1


def test_folder_source_and_utterances(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for spk in ("alice", "bob"):
        for word in ("yes", "no"):
            for rep in (1, 2):
                (tmp_path / spk).mkdir(exist_ok=True)
                wave = rng.normal(0, 0.1, 12000).astype(np.float32)
                sf.write(tmp_path / spk / f"{word}_r{rep:02d}.flac", wave, 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    spec = InputSpec(kind="audio", length=16000)
    ds = read_dataset(tmp_path, spec)  # format auto: an audio model's folder
    assert ds.format == "audio"
    items = ds.items
    assert items.class_names == ["alice", "bob"] and len(items) == 8
    assert items.data.shape == (8, 16000)  # 0.75 s clips repeated up to 1 s
    torch.testing.assert_close(items.data[0, 12000:], items.data[0, :4000])
    words = items.attributes["utterance"]
    assert (words[items.labels == 0] == words[items.labels == 1]).all()  # same words, same ids
    assert len(set(words.tolist())) == 2
    assert utterance_of(Path("backward_r10.flac")) == "backward" and utterance_of(Path("hello.wav")) == "hello"


def test_folder_with_a_bad_clip(tmp_path: Path) -> None:
    (tmp_path / "s1").mkdir()
    sf.write(tmp_path / "s1" / "a.wav", tone(), 16000)
    (tmp_path / "s1" / "b.wav").write_bytes(b"junk")
    spec = InputSpec(kind="audio")
    with pytest.raises(DataError, match="b.wav: not an audio file"):
        audio_folder(tmp_path, spec)
    assert len(audio_folder(tmp_path, spec, skip_bad=True)) == 1
    with pytest.raises(DataError, match="no audio files"):
        audio_folder(tmp_path / "s1", spec)


def test_trial_list_reader(tmp_path: Path) -> None:
    for name in ("a/1.wav", "a/2.wav", "b/1.wav"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        sf.write(tmp_path / name, tone(seconds=0.3 if name == "b/1.wav" else 0.5), 16000)
    lst = tmp_path / "trials.txt"
    lst.write_text("# VoxCeleb style\n1 a/1.wav a/2.wav\n0 a/1.wav b/1.wav\n\ntarget a/2.wav a/1.wav\n")
    trials = read_trials(lst)
    assert [t.target for t in trials] == [True, False, True]
    assert trials[1].test == tmp_path / "b" / "1.wav"
    ds = read_dataset(lst, InputSpec(kind="audio"))  # format auto: the trials source
    assert ds.format == "trials" and ds.pairs is not None
    assert ds.items.data.shape == (3, 8000)  # full length, zero-padded to the longest
    assert ds.pairs.same.tolist() == [True, False, True]
    assert ds.items.names[ds.pairs.b[1]].endswith("b/1.wav")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a/1.wav a/2.wav\nmaybe a/1.wav b/1.wav\n")
    with pytest.raises(DataError, match=r"bad.txt:2: label 'maybe'"):
        read_trials(bad)
    bad.write_text("1 a/1.wav\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 'label enrol test'"):
        read_trials(bad)
    bad.write_text("1 a/1.wav a/2.wav\n")
    with pytest.raises(DataError, match="needs both"):
        read_trials(bad)
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="not a UTF-8"):
        read_trials(bad)


def test_audio_info_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros((800, 2), np.float32) + 0.1, 8000)
    info = audio.audio_info(path)
    assert (info.sample_rate, info.channels, info.frames, info.seconds) == (8000, 2, 800, 0.1)
