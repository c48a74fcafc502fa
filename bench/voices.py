"""Voices: speaker verification and identification on ``$TWINNET_DATA/voices`` split by speaker.

    python bench/voices.py          # train both recipes (≤ 30 min), evaluate; writes bench/results/voices.json
    python bench/voices.py --quick --out voices_quick   # a smoke test: one short epoch each, 6 words

What it does (seeded):

1. Splits the 21 speakers: 7 **test** speakers (never trained on: every figure below is measured on
   them), 14 training speakers (the trainer holds 15% of them out for early stopping and the
   stored threshold). The folders are links under ``--work``.
2. Trials among the test speakers' clips: **text-dependent** (every two clips of the same keyword)
   and **text-independent** (every two clips). EER, minDCF at p_target 0.01 and 0.05, and the
   accuracy at each twinnet model's stored threshold; for the from-scratch model also adaptive
   s-norm with the training speakers' clips as cohort.
3. Anchors in the same run: MFCC (20 coefficients, mean and standard deviation over frames, cosine)
   and the ``resemblyzer`` package as shipped (``preprocess_wav`` + ``VoiceEncoder.embed_utterance``).
4. twinnet from scratch (``configs/voices.yaml``: x-vector TDNN, ArcFace, WCCN) and resemblyzer's weights
   fine-tuned as a twin (``configs/voices-finetune.yaml``: GE2E, top LSTM layer, WCCN whitening
   fitted on the training speakers); a model with a whitening is also measured without it
   (``<name>_unwhitened``). (That twinnet's
   ``resemblyzer`` encoder gives the package's embeddings is tested in tests/encoders/test_speaker.py.)
5. Embedding time of a 1 s clip at batch 1 on 2 threads: median of blocks of calls, the models
   taking turns block by block (``timing_ms``); call-by-call alternation in ``timing_ms_interleaved``.
6. Open-set identification through a gallery: 5 clips per enrolled speaker (mean template), half
   of the test speakers enrolled; DIR@FAR=1%, rank-1.
7. The channel: text-independent EER when only each clip's background (its quietest 30% of
   frames) is compared, by its mean log-mel spectrum and through each model (``channel``).

Timings are upper bounds when other work shares the CPU (the JSON records the load average).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
SEED = 0
TEST_SPEAKERS = 7


def voices_root() -> Path:
    from twinnet.runtime import data_root

    return data_root() / "voices"


def link_speakers(root: Path, names: list[str], target: Path) -> Path:
    for name in names:
        folder = target / name
        folder.mkdir(parents=True, exist_ok=True)
        for clip in (root / name).iterdir():
            link = folder / clip.name
            if clip.suffix == ".flac" and not link.exists():
                link.symlink_to(clip)
    return target


def split(root: Path, work: Path) -> dict[str, Path]:
    speakers = sorted(p.name for p in root.iterdir() if p.is_dir())
    order = np.random.default_rng([SEED, 19]).permutation(len(speakers))
    test = sorted(speakers[i] for i in order[:TEST_SPEAKERS])
    train = sorted(speakers[i] for i in order[TEST_SPEAKERS:])
    return {"train": link_speakers(root, train, work / "train"), "test": link_speakers(root, test, work / "test")}


def mfcc_embeddings(waves: torch.Tensor) -> np.ndarray:
    import librosa

    rows = []
    for w in waves.numpy():
        m = librosa.feature.mfcc(y=w, sr=16000, n_mfcc=20, n_fft=512, win_length=400, hop_length=160)
        rows.append(np.r_[m.mean(1), m.std(1)])
    z = np.asarray(rows, np.float32)
    z -= z.mean(0)  # centre, so cosine compares shapes rather than the common offset
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    # zero-padded to the anchor gallery's 256 dimensions (cosines unchanged)
    return np.pad(z, ((0, 0), (0, 256 - z.shape[1])))


def resemblyzer_shipped() -> tuple[Any, Any]:
    from resemblyzer import VoiceEncoder, preprocess_wav

    return VoiceEncoder("cpu", verbose=False), preprocess_wav


def resemblyzer_embeddings(waves: torch.Tensor) -> np.ndarray:
    encoder, preprocess = resemblyzer_shipped()
    return np.asarray([encoder.embed_utterance(preprocess(w, source_sr=16000)) for w in waves.numpy()], np.float32)


def evaluate_all(model: Any, test: Any, z: torch.Tensor, cohort: torch.Tensor | None) -> dict[str, Any]:
    from twinnet.protocols.speaker import AdaptiveSNorm, SpeakerIdentificationProtocol, SpeakerVerificationProtocol

    normalizer = None if cohort is None else AdaptiveSNorm(model.comparator, cohort.numpy(), top_n=200)
    verification = SpeakerVerificationProtocol(max_trials=None).evaluate_embeddings(model, test, z, normalizer)
    ident = SpeakerIdentificationProtocol(known=0.5, enrol=5, templates="mean").evaluate_embeddings(model, test, z)
    out: dict[str, Any] = {}
    for key, value in verification.metrics.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    keys = ("rank1", "dir@far=0.01", "dir@far=0.1", "enrolled_speakers", "unknown_speakers", "known_queries",
            "unknown_queries")  # fmt: skip
    out["identification"] = {k: ident.metrics[k] for k in keys}
    return out


def anchor_model() -> Any:
    """A twin with resemblyzer's encoder: the comparator and gallery for precomputed anchor embeddings."""
    import twinnet

    config = {"input": {"kind": "audio"}, "encoder": {"name": "resemblyzer"}, "comparator": {"name": "cosine"},
              "normalize": True}  # fmt: skip
    model = twinnet.build_model(twinnet.ModelConfig.model_validate(config))
    return model.eval()


def train(config: str, train_dir: Path, out: Path, minutes: float, extra: list[str]) -> tuple[Any, float]:
    import twinnet
    from twinnet.config import load_config
    from twinnet.train import train_from_config

    cfg = load_config(REPO / config, [f"data.path={train_dir}", f"train.max_minutes={minutes}",
                                      "train.progress=false", *extra])  # fmt: skip
    started = time.perf_counter()
    train_from_config(cfg, out)
    return twinnet.load(out / "model"), (time.perf_counter() - started) / 60


def embed_ms(functions: dict[str, Any], rounds: int = 8, calls: int = 10) -> dict[str, float]:
    """Median milliseconds per call of each function, measured in blocks of ``calls`` calls (after
    two warm-up calls), the functions taking turns block by block for ``rounds`` rounds, so that a
    change of load hits all alike while each model runs warm, as a service running one model does.
    (Alternating call by call, each model's weights evict the other's from the caches: measured,
    that tripled the x-vector's time, 2.5 → 7.9 ms, and left the LSTM's unchanged.)"""
    times: dict[str, list[float]] = {k: [] for k in functions}
    for _ in range(rounds):
        for name, f in functions.items():
            f(), f()
            for _ in range(calls):
                t = time.perf_counter()
                f()
                times[name].append((time.perf_counter() - t) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def embed_ms_interleaved(functions: dict[str, Any], repeats: int = 40) -> dict[str, float]:
    """Median milliseconds per call, the functions alternating call by call (caches shared)."""
    times: dict[str, list[float]] = {k: [] for k in functions}
    for f in functions.values():
        f()
    for _ in range(repeats):
        for name, f in functions.items():
            t = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def background_waves(waves: torch.Tensor, quantile: float = 0.3, hop: int = 160, win: int = 400) -> list[torch.Tensor]:
    """Each clip's quietest frames (energy below its ``quantile``), their hop-length pieces put end
    to end: what the room and the microphone sound like, with (almost) no voice in it."""
    out = []
    for w in waves:
        frames = w[: len(w) - len(w) % hop].reshape(-1, hop)
        windows = torch.nn.functional.pad(w, (0, win)).unfold(0, win, hop)[: len(frames)]
        energy = windows.square().sum(1)
        quiet = energy <= torch.quantile(energy, quantile)
        out.append(frames[quiet].reshape(-1))
    return out


def background_spectra(background: list[torch.Tensor]) -> np.ndarray:
    """The mean log-mel spectrum of each clip's background (not mean-normalised: the channel is
    precisely a spectral colouring), centred over clips; cosine compares them."""
    from twinnet.audio.features import LogMel

    logmel = LogMel(16000, 512, 400, 160, 40)
    with torch.no_grad():
        z = np.stack([logmel(b[None].float())[0].mean(1).numpy() for b in background]).astype(np.float32)
    z -= z.mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return np.pad(z, ((0, 0), (0, 256 - z.shape[1])))


def channel_figures(anchor: Any, test: Any, test_items: Any, models: dict[str, Any]) -> dict[str, Any]:
    """Does the recording channel alone identify these speakers, and do the models use it? EER of
    text-independent trials when only each clip's background (its quietest 30% of frames, ~0.3 s)
    is compared: by its mean spectrum, and through each model. 0.5 is chance; the lower, the more
    a speaker's room and microphone give them away."""
    background = background_waves(test_items.data)
    out: dict[str, Any] = {"background_seconds_median": float(np.median([len(b) for b in background]) / 16000)}
    z = torch.from_numpy(background_spectra(background))
    out["background_spectrum_eer"] = evaluate_all(anchor, test, z, None)["text_independent"]["eer"]
    for name, embed_one in models.items():
        with torch.no_grad():
            zb = torch.from_numpy(np.stack([embed_one(b) for b in background]).astype(np.float32))
        if zb.shape[1] < 256:
            zb = torch.nn.functional.pad(zb, (0, 256 - zb.shape[1]))
        out[f"{name}_on_background_eer"] = evaluate_all(anchor, test, zb, None)["text_independent"]["eer"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-voices")
    parser.add_argument("--scratch-minutes", type=float, default=12.0)
    parser.add_argument("--finetune-minutes", type=float, default=10.0)
    parser.add_argument("--out", default="voices", help="result name under bench/results (voices)")
    parser.add_argument("--note", default="", help="what else ran on the machine (recorded)")
    parser.add_argument("--quick", action="store_true", help="one short epoch per recipe (a smoke test)")
    parser.add_argument("--words", type=int, default=None, help="measure on the clips of the first N words only")
    parser.add_argument("overrides", nargs="*", help="config overrides for the from-scratch recipe")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(2)
    from twinnet.config import InputSpec
    from twinnet.data.audio import audio_folder
    from twinnet.data.sources import Dataset
    from twinnet.embedding import embed_batches

    folders = split(voices_root(), args.work / "data")
    spec = InputSpec(kind="audio", sample_rate=16000, length=16000)
    test_items = audio_folder(folders["test"], spec)
    words = 6 if args.quick else args.words
    if words is not None:  # fewer test clips (every test speaker still): anchors take ~0.5 s a clip here
        test_items = test_items.subset(np.nonzero(test_items.attributes["utterance"] < words)[0])
    results_words = words
    train_items = audio_folder(folders["train"], spec)
    test = Dataset(test_items, source=str(folders["test"]))
    results: dict[str, Any] = {"split": {"test_speakers": test_items.class_names,
                                         "train_speakers": len(train_items.class_names),
                                         "test_clips": len(test_items), "train_clips": len(train_items),
                                         "words": results_words}}  # fmt: skip
    anchor = anchor_model()

    # anchors
    z_mfcc = torch.from_numpy(mfcc_embeddings(test_items.data))
    results["mfcc"] = evaluate_all(anchor, test, z_mfcc, None)
    z_res = torch.from_numpy(resemblyzer_embeddings(test_items.data))
    results["resemblyzer"] = evaluate_all(anchor, test, z_res, None)

    # twinnet from scratch, and resemblyzer fine-tuned as a twin
    quick = ["train.epochs=1", "train.samples_per_epoch=96", "train.validation.pairs=200"] if args.quick else []
    scratch, scratch_min = train("configs/voices.yaml", folders["train"], args.work / "scratch", args.scratch_minutes,
                                 [*quick, *args.overrides])  # fmt: skip
    finetuned, finetune_min = train("configs/voices-finetune.yaml", folders["train"], args.work / "finetuned",
                                    args.finetune_minutes, quick)  # fmt: skip
    # s-norm (cohort: the training speakers' clips) for the from-scratch model; the LSTM models take
    # ~0.2 s a clip on these shared cores, so their cohort passes are left out of the time budget
    with torch.no_grad():
        z, cohort = embed_batches(scratch, test_items), embed_batches(scratch, train_items)
    results["twinnet"] = evaluate_all(scratch, test, z, cohort)
    with torch.no_grad():
        z = embed_batches(finetuned, test_items)
    results["finetuned"] = evaluate_all(finetuned, test, z, None)
    # the same models without their whitening (fitted on the training speakers after training): what it adds
    for key, model in (("twinnet", scratch), ("finetuned", finetuned)):
        if model.whitening is not None:
            model.whitening.fitted.fill_(False)
            with torch.no_grad():
                z = embed_batches(model, test_items)
            results[f"{key}_unwhitened"] = evaluate_all(model, test, z, None)
            model.whitening.fitted.fill_(True)

    # embedding time, batch 1, a 1 s clip
    clip = test_items.data[0]
    encoder, preprocess = resemblyzer_shipped()
    prepared = preprocess(clip.numpy(), source_sr=16000)

    def ours(model: Any) -> Any:
        def run() -> None:
            with torch.no_grad():
                model.embed(clip[None])

        return run

    functions = {"twinnet": ours(scratch), "finetuned": ours(finetuned),
                 "resemblyzer": lambda: encoder.embed_utterance(prepared),
                 "resemblyzer_with_preprocess":
                     lambda: encoder.embed_utterance(preprocess(clip.numpy(), source_sr=16000))}  # fmt: skip
    timing = embed_ms(functions)
    results["timing_ms"] = timing
    results["timing_ms_interleaved"] = embed_ms_interleaved(functions)

    def unit(model: Any) -> Any:
        return lambda wave: model.embed(wave[None])[0].numpy()

    results["channel"] = channel_figures(anchor, test, test_items, {
        "twinnet": unit(scratch), "finetuned": unit(finetuned), "resemblyzer": lambda w: encoder.embed_utterance(
            w.numpy())})  # fmt: skip

    td, ti = results["twinnet"]["text_dependent"], results["twinnet"]["text_independent"]
    ft_td, ft_ti = results["finetuned"]["text_dependent"], results["finetuned"]["text_independent"]
    r_td, r_ti = results["resemblyzer"]["text_dependent"], results["resemblyzer"]["text_independent"]
    results.update({
        "text_dependent": td, "text_independent": ti,
        "embed_ms_per_clip": timing["twinnet"], "train_minutes": round(scratch_min + finetune_min, 2),
        "train_minutes_scratch": round(scratch_min, 2), "train_minutes_finetune": round(finetune_min, 2),
        "ratios": {
            "scratch_td_eer_vs_resemblyzer": td["eer"] / r_td["eer"],
            "finetuned_td_eer_vs_resemblyzer": ft_td["eer"] / r_td["eer"],
            "finetuned_ti_eer_vs_resemblyzer": ft_ti["eer"] / r_ti["eer"],
            "finetuned_ti_min_dcf_001_vs_resemblyzer": ft_ti["min_dcf_001"] / r_ti["min_dcf_001"],
            "speedup_vs_resemblyzer": timing["resemblyzer"] / timing["twinnet"],
            "finetuned_speedup_vs_resemblyzer": timing["resemblyzer"] / timing["finetuned"],
        },
        "note": args.note,
    })  # fmt: skip
    path = write_result(args.out, results, started)
    rows = [("mfcc", results["mfcc"]), ("resemblyzer (shipped)", results["resemblyzer"]),
            ("twinnet from scratch", results["twinnet"]),
            ("resemblyzer fine-tuned (GE2E)", results["finetuned"])]  # fmt: skip
    rows += [(f"{name}, no whitening", results[f"{key}_unwhitened"])
             for key, name in (("twinnet", "from scratch"), ("finetuned", "fine-tuned"))
             if f"{key}_unwhitened" in results]  # fmt: skip
    print(
        f"{'system':32s} {'TD EER':>7s} {'TI EER':>7s} {'TI DCF.01':>9s} {'TI DCF.05':>9s} {'DIR@1%':>7s} {'rank1':>6s}"
    )
    for name, r in rows:
        print(f"{name:32s} {r['text_dependent']['eer']:7.4f} {r['text_independent']['eer']:7.4f} "
              f"{r['text_independent']['min_dcf_001']:9.4f} {r['text_independent']['min_dcf_005']:9.4f} "
              f"{r['identification']['dir@far=0.01']:7.4f} {r['identification']['rank1']:6.3f}")  # fmt: skip
    print("embedding ms (1 s clip, batch 1):", {k: round(v, 2) for k, v in timing.items()})
    print("ratios:", {k: round(v, 3) for k, v in results["ratios"].items()})
    print("channel (TI EER on background only; 0.5 = chance):", results["channel"])
    print(f"training minutes: scratch {scratch_min:.1f}, fine-tune {finetune_min:.1f}; wrote {path}")


if __name__ == "__main__":
    main()
