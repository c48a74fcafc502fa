"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own README
    assert (tmp_path / "runs" / "api-model" / "twinnet.json").exists()
    assert namespace["result"].validation["roc_auc"] > 0.5


def test_readme_extending_example_registers_one_of_each():
    from twinnet.compare import COMPARATORS
    from twinnet.losses import LOSSES
    from twinnet.registry import DATA_SOURCES, PROTOCOLS

    text = README.read_text(encoding="utf-8")
    section = text.split("## Extending twinnet", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names = [(COMPARATORS, "negative_l1"), (LOSSES, "centroid"), (PROTOCOLS, "leave_one_out"), (DATA_SOURCES, "npz")]
    try:
        exec(compile(code, "README.md", "exec"), {})  # our own README
        for registry, name in names:
            assert name in registry, name
        import torch

        from twinnet.config import parse_config

        cfg = parse_config({"loss": {"name": "centroid"}, "data": {"format": "npz"},
                            "train": {"validation": {"protocol": "leave_one_out"}}})  # fmt: skip
        assert cfg.train.validation.protocol == "leave_one_out"
        comparator = COMPARATORS.build("negative_l1")
        assert comparator(torch.zeros(1, 2), torch.ones(1, 2)).item() == -2.0 and not comparator.is_distance
    finally:
        for registry, name in names:
            registry.unregister(name)
