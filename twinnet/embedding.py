"""The one loop that runs a model over data: eval mode, no gradients, batching, the model's device,
and for texts length-sorted batches on worker threads. Protocols, inference, galleries and the
service all embed through :func:`embed_batches`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from twinnet.data.items import ItemSet
from twinnet.data.text import TextItemSet
from twinnet.errors import DataError
from twinnet.model import AnyTwin, Side

#: Texts per batch: transformer batches beyond this gain nothing on a CPU and pad more.
TEXT_BATCH = 64


def embed_batches(
    model: AnyTwin,
    inputs: torch.Tensor | Sequence[str] | ItemSet,
    *,
    side: Side = "a",
    indices: np.ndarray | Sequence[int] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Embeddings of ``inputs`` through the encoder of ``side``, in input order, on the CPU.

    ``inputs`` is a batch tensor, a list of texts (text models), or an :class:`ItemSet` (optionally
    only ``indices`` into it; image items are loaded batch by batch). The model runs in eval mode
    without gradients and is put back in the mode it was in.
    """
    if isinstance(inputs, ItemSet):
        idx = np.arange(len(inputs)) if indices is None else np.asarray(indices, dtype=np.int64)
        if isinstance(inputs, TextItemSet):
            return embed_texts(model, inputs.load(idx), min(batch_size, TEXT_BATCH), side)
        batches: Any = (inputs.load(idx[i : i + batch_size]) for i in range(0, len(idx), batch_size))
        n = len(idx)
    elif isinstance(inputs, torch.Tensor):
        tensor = inputs if indices is None else inputs[torch.as_tensor(np.asarray(indices), dtype=torch.long)]
        batches = (tensor[i : i + batch_size] for i in range(0, len(tensor), batch_size))
        n = len(tensor)
    else:
        texts = list(inputs)
        if indices is not None:
            texts = [texts[i] for i in indices]
        return embed_texts(model, texts, min(batch_size, TEXT_BATCH), side)
    if n == 0:
        return torch.zeros(0, model.embedding_dim)
    device = model.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [model.embed(batch.to(device), side).float().cpu() for batch in batches]
    finally:
        model.train(was_training)
    return torch.cat(out)


def embed_texts(
    model: AnyTwin, texts: Sequence[str], batch_size: int = 32, side: Side = "a", prefetch: int = 2
) -> torch.Tensor:
    """Embeddings of ``texts`` on the CPU, in input order.

    Texts are encoded longest first, so each batch pads to similar lengths. On a CPU with several
    threads, batches are shared out to one worker per thread, each running its batches with a
    single intra-op thread (on 2 cores about 7% faster than one stream of 2-thread batches, whose
    small matrix products synchronise often); otherwise the next batches are tokenized on a
    background thread while the model runs. ``side="b"`` uses a half-twin's second (document) encoder.
    """
    texts = list(texts)
    if not model.takes_texts(side):
        raise DataError("this model does not take texts")
    if not texts:
        return torch.zeros(0, model.embedding_dim)
    lengths = [len(t) if isinstance(t, str) else 0 for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    threads = torch.get_num_threads()
    workers = min(4, threads) if model.device.type == "cpu" and len(chunks) >= 4 else 1
    was_training = model.training
    model.eval()
    try:
        if workers > 1:
            out = torch.empty(len(texts), model.embedding_dim)

            def work(k: int) -> None:
                torch.set_num_threads(max(1, threads // workers))  # this worker thread's own setting
                with torch.inference_mode():  # grad mode is per thread: each worker sets its own
                    for chunk in chunks[k::workers]:
                        z = model.embed(model.tokenize([texts[i] for i in chunk], side), side)
                        out[torch.tensor(chunk)] = z.float().cpu()

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, range(workers)))
            return out
        with torch.no_grad():
            return _embed_prefetching(model, side, texts, chunks, prefetch)
    finally:
        model.train(was_training)


def _embed_prefetching(
    model: AnyTwin, side: Side, texts: list[str], chunks: list[list[int]], prefetch: int
) -> torch.Tensor:
    """One stream of batches; the next ``prefetch`` batches are tokenized on a background thread."""
    rows: list[torch.Tensor] = []

    def tokenize(chunk: list[int]) -> Any:
        return model.tokenize([texts[i] for i in chunk], side)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(tokenize, c) for c in chunks[:prefetch]]
        for n in range(len(chunks)):
            batch = pending[n].result()
            if n + prefetch < len(chunks):
                pending.append(pool.submit(tokenize, chunks[n + prefetch]))
            rows.append(model.embed(batch, side).float().cpu())
    out = torch.empty(len(texts), rows[0].shape[1])
    out[torch.tensor([i for c in chunks for i in c])] = torch.cat(rows)
    return out


def fit_whitening(model: AnyTwin, items: ItemSet, seed: int = 0) -> None:
    """Fit ``model.whitening`` on the embeddings of ``items`` (an :class:`~twinnet.data.items.ItemSet`
    of training items; for a whitening that needs classes, only the labelled ones; at most
    ``max_items`` of them, a seeded random subset), as the model embeds them without it. Nothing to
    do for a model without one."""
    whitening = model.whitening
    if whitening is None:
        return
    # a whitening that needs classes learns from the labelled items only (an unlabelled item is a class of its own)
    pool = np.nonzero(items.labelled)[0] if whitening.needs_labels else np.arange(len(items))
    rng = np.random.default_rng([seed, 7])
    idx = np.sort(rng.choice(pool, whitening.max_items, replace=False)) if len(pool) > whitening.max_items else pool
    whitening.fitted.fill_(False)  # embed as the encoder (and normalisation) alone do
    z = embed_batches(model, items, indices=idx)
    whitening.fit(z, np.asarray(items.labels)[idx])
