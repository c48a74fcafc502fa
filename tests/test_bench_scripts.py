"""Every benchmark script imports cleanly: a renamed library function breaks a benchmark that no
test runs otherwise (bench/omniglot.py once imported ``embed_batches`` from where it had moved)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 10


def bench_module(script: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A benchmark script imported as a module: its imports and definitions run, not main()."""
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their helpers (_common) from bench/
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_imports(script, monkeypatch):
    module = bench_module(script, monkeypatch)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


def test_the_stsb_part_reads_the_protocol_result_it_gets(monkeypatch, tmp_path):
    """bench/text.py read ``final.pearson`` from the ``ProtocolResult`` that ``evaluate_sts`` returns
    (a mapping of metrics): the STS-B part crashed after its 16 minutes of training."""
    from types import SimpleNamespace

    from twinnet.protocols.base import ProtocolResult

    text = bench_module(BENCH / "text.py", monkeypatch)
    history = [{"epoch": 1, "train_loss": 1.0, "val_spearman": 0.8, "seconds": 1.0, "items_per_s": 2.0}]
    fake_run = SimpleNamespace(model_dir=tmp_path, best_epoch=1, epochs_run=1, history=history)
    configs = []
    monkeypatch.setattr(text, "train_from_config", lambda cfg, out, console: configs.append(cfg) or fake_run)
    monkeypatch.setattr(text, "load", lambda path: object())
    result = ProtocolResult("sts", {"spearman": 0.81, "pearson": 0.79}, "spearman")
    monkeypatch.setattr(text, "evaluate_sts", lambda model, items, pairs: result)
    figures = text.finetune_stsb(tmp_path, SimpleNamespace(items=None, pairs=None), ["loss.name=angle"])
    assert figures["stsb_dev_spearman_finetuned"] == 0.81 and figures["stsb_dev_pearson_finetuned"] == 0.79
    assert figures["finetune"]["history"] == history and "wise_ft" in figures
    # --stsb-override reaches the recipe and is recorded with the figures
    assert configs[0].loss.name == "angle" and figures["finetune"]["overrides"] == ["loss.name=angle"]


def test_signatures_runs_the_parts_asked_with_their_overrides(monkeypatch, tmp_path):
    sig = bench_module(BENCH / "signatures.py", monkeypatch)
    calls, written = [], {}
    fields = {"eer": 0.1, "mean_writer_eer": 0.1, "roc_auc": 0.9, "far": 0.1, "frr": 0.1, "test_writers": 9}

    def fake_run(kind, data, test_share, overrides):
        calls.append((kind, list(overrides)))
        return {**fields, "train_minutes": 1.0}

    monkeypatch.setattr(sig, "run", fake_run)
    monkeypatch.setattr(sig, "write_result", lambda name, figures, started: written.update({name: figures}) or name)
    argv = ["signatures.py", "--parts", "online", "--online-override", "data.augment.enabled=true", "--out", "x"]
    monkeypatch.setattr(sys, "argv", argv)
    sig.main()
    assert calls == [("online", ["data.augment.enabled=true"])]
    assert set(written) == {"x"} and "offline" not in written["x"]
    assert written["x"]["online"]["overrides"] == ["data.augment.enabled=true"]
    monkeypatch.setattr(sys, "argv", ["signatures.py", "--parts", "faces"])
    with pytest.raises(SystemExit) as exit_info:
        sig.main()
    assert exit_info.value.code == 2
