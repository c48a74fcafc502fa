"""A standing guard for the input parsers: whatever a user hands in, the answer is a value or a
:class:`~twinnet.errors.TwinnetError` (one line, exit status 2 in the CLI), never another exception.

Each property runs a modest number of generated examples so the file stays fast; inputs mix
arbitrary bytes with near-valid ones (real field names, labels and delimiters), which reach deeper.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from twinnet import build_model
from twinnet.config import Config, ModelConfig, apply_overrides, load_config, parse_config
from twinnet.data.pairs import PairsFile, read_pairs_file
from twinnet.data.text import TEXT_FORMATS, TextPairs, read_text_pair_file
from twinnet.errors import TwinnetError
from twinnet.inference import Verification, decide

# TWINNET_PROPERTY_EXAMPLES=5000 searches longer (by hand, when a parser changes)
EXAMPLES = int(os.environ.get("TWINNET_PROPERTY_EXAMPLES", "120"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the module: each example rewrites its file there."""
    return tmp_path_factory.mktemp("property")


def write(work: Path, name: str, content: bytes | str) -> Path:
    path = work / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def value_or_twinnet_error(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``, or ``None`` when it raised a TwinnetError; any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except TwinnetError as err:
        assert str(err).strip(), "an error must say what is wrong"
        return None


# -- pairs files --------------------------------------------------------------------------------------------

LABELS = ["1", "0", "true", "false", "same", "different", "yes", "no", "-1", "maybe", "", " 1 ", "label", "2"]
FIELD = st.one_of(
    st.sampled_from(["a.png", "b/c.png", "", " ", '"q,"', "x\ty", "ä.png", "/abs/p.png"]), st.text(max_size=12)
)
ROW = st.lists(st.one_of(FIELD, st.sampled_from(LABELS)), min_size=0, max_size=5)
PAIRS_TEXT = st.builds(
    lambda rows, delimiter, newline: newline.join(delimiter.join(r) for r in rows),
    st.lists(ROW, max_size=8),
    st.sampled_from([",", "\t", ";"]),
    st.sampled_from(["\n", "\r\n", "\r"]),
)


PAIRS_BYTES = st.one_of(
    st.binary(max_size=600), PAIRS_TEXT.map(str.encode), PAIRS_TEXT.map(lambda t: t.encode("utf-16"))
)


@FAST
@given(content=PAIRS_BYTES, suffix=st.sampled_from([".csv", ".tsv", ".txt"]))
def test_read_pairs_file_on_any_bytes(work: Path, content: bytes, suffix: str) -> None:
    result = value_or_twinnet_error(read_pairs_file, write(work, "pairs" + suffix, content))
    if result is not None:
        assert isinstance(result, PairsFile)
        same = result.pairs.same
        assert same.any() and not same.all()  # both kinds, always
        assert max(result.pairs.a.max(), result.pairs.b.max()) < len(result.paths)


# -- text pairs files ---------------------------------------------------------------------------------------

TEXT_FIELD = st.one_of(
    st.sampled_from(["A", "B c", '"quoted, text"', "", "3.5", "1", "0", "x\x00y"]), st.text(max_size=10)
)
HEADERS = ["text_a", "text_b", "label", "score", "sentence1", "sentence2", "query", "document", "Quality", "#1 ID",
           "#2 ID", "#1 String", "#2 String", "genre"]  # fmt: skip
TABLE = st.builds(
    lambda header, rows, delimiter: "\n".join(delimiter.join(r) for r in [header, *rows]),
    st.lists(st.sampled_from(HEADERS), max_size=7),
    st.lists(st.lists(TEXT_FIELD, max_size=8), max_size=6),
    st.sampled_from([",", "\t"]),
)
JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
JSONL = st.lists(
    st.one_of(st.dictionaries(st.sampled_from(HEADERS), JSON_VALUE, max_size=4).map(json.dumps), st.text(max_size=20)),
    max_size=6,
).map("\n".join)
SCALE = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 10))


@FAST
@given(content=st.one_of(st.binary(max_size=400), TABLE.map(str.encode), JSONL.map(str.encode)),
       suffix=st.sampled_from([".csv", ".tsv", ".txt", ".jsonl"]), fmt=st.sampled_from(TEXT_FORMATS),
       score_max=SCALE, positive_score=SCALE)  # fmt: skip
def test_read_text_pair_file_on_any_bytes_in_every_format(
    work: Path, content: bytes, suffix: str, fmt: str, score_max: float | None, positive_score: float | None
) -> None:
    path = write(work, "texts" + suffix, content)
    result = value_or_twinnet_error(read_text_pair_file, path, fmt, score_max=score_max, positive_score=positive_score)
    if result is not None:
        assert isinstance(result, TextPairs) and len(result) > 0
        if result.pairs.score is not None:
            assert np.isfinite(result.pairs.score).all()


# -- configs ------------------------------------------------------------------------------------------------


def config_paths(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema (``train.validation.pairs``, …)."""
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                out += config_paths(candidate, f"{prefix}{name}.")
    return out


PATHS = config_paths()
KEYS = st.one_of(st.sampled_from(sorted({p.rsplit(".", 1)[-1] for p in PATHS} | {"params", "metric", "ways"})),
                 st.text(max_size=6))  # fmt: skip
NAMES = ["conv4", "mlp", "euclidean", "triplet", "image", "verification", "oneshot", "auto", "sgd", "cosine"]
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10),
                   st.sampled_from(NAMES))  # fmt: skip
NESTED = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=25)  # fmt: skip
SECTIONS = st.dictionaries(st.one_of(st.sampled_from(["model", "data", "loss", "train"]), st.text(max_size=5)),
                           NESTED, max_size=4)  # fmt: skip


@FAST
@given(data=st.one_of(SECTIONS, NESTED))
def test_parse_config_on_any_nested_mapping(data: Any) -> None:
    result = value_or_twinnet_error(parse_config, data)
    assert result is None or isinstance(result, Config)


# scalars PyYAML's constructors fail on with ValueError, AttributeError or IndexError, not YAMLError
TRICKY = ["0", "-5", ".nan", ".inf", "[1, 2]", "{a: 1}", "2001-13-45", "0000-00-00", "!!int x", "!!int",
          "!!timestamp 3", "!!binary x", "!!float", "null", "[[[[", "&a [*a]"]  # fmt: skip
YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(TRICKY)), max_size=4).map(
        lambda items: "\n".join(f"{p}: {v}" for p, v in items)
    ),
    st.builds(lambda d: json.dumps(d, allow_nan=True), SECTIONS),
    st.lists(st.tuples(st.sampled_from(PATHS), st.text(max_size=12)), max_size=6).map(
        lambda items: "\n".join(f"{'  ' * p.count('.')}{p.rsplit('.', 1)[-1]}: {v}" for p, v in items)
    ),
)


@FAST
@given(text=YAML_TEXT, raw=st.binary(max_size=80), suffix=st.sampled_from([".yaml", ".json"]))
def test_load_config_on_any_yaml_or_json_text(work: Path, text: str, raw: bytes, suffix: str) -> None:
    for content in (text, raw):
        result = value_or_twinnet_error(load_config, write(work, "config" + suffix, content))
        assert result is None or isinstance(result, Config)


OVERRIDE = st.one_of(
    st.text(max_size=30),
    st.builds(lambda key, value: f"{key}={value}", st.one_of(st.sampled_from(PATHS), st.text(max_size=10)),
              st.one_of(st.text(max_size=15), st.sampled_from(TRICKY))),
)  # fmt: skip


@FAST
@given(overrides=st.lists(OVERRIDE, max_size=5), start=st.one_of(st.just({}), SECTIONS))
def test_apply_overrides_on_any_override_strings(overrides: list[str], start: dict[str, Any]) -> None:
    data = value_or_twinnet_error(apply_overrides, start, overrides)
    if data is not None:
        assert isinstance(data, dict)
        result = value_or_twinnet_error(parse_config, data)
        assert result is None or isinstance(result, Config)
    result = value_or_twinnet_error(load_config, None, overrides)
    assert result is None or isinstance(result, Config)


# -- decisions ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> list[Any]:
    out = []
    for comparator in ("euclidean", "cosine"):  # a distance and a score
        config = {"input": {"kind": "vector", "features": 4}, "comparator": {"name": comparator},
                  "encoder": {"name": "mlp", "params": {"embedding_dim": 2}}}  # fmt: skip
        out.append(build_model(ModelConfig.model_validate(config)))
    return out


NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 2**80), st.none(),
                   st.text(max_size=6), st.booleans(), st.builds(np.float32, st.floats(width=32)),
                   st.builds(torch.tensor, st.floats()))  # fmt: skip


@settings(FAST, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=NUMBER, threshold=NUMBER, which=st.integers(0, 1))
def test_decide_on_any_value_and_threshold(models: list[Any], value: Any, threshold: Any, which: int) -> None:
    result = value_or_twinnet_error(decide, models[which], value, threshold)
    if result is not None:
        assert isinstance(result, Verification)
        assert math.isfinite(result.value)
        assert result.threshold is None or math.isfinite(result.threshold)
        assert result.same in (True, False, None) and (result.same is None) == (result.threshold is None)
        json.dumps(result.to_dict(), allow_nan=False)
