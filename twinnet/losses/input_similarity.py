"""Keep what the inputs already know: the input-similarity term of batch losses.

A twin trained on a handful of classes learns to tell exactly those apart and forgets the rest of
what distinguishes its inputs; on classes it never saw it can end up worse than comparing the raw
inputs (the quickstart's six digits are the case in point). This term pulls the cosine similarities
of a batch's embeddings toward the cosine similarities of the same inputs, flattened and centred on
the batch mean, so the embedding keeps the inputs' own geometry wherever the class loss does not ask
for something else. ``train.input_similarity_weight`` weighs it against the class and instance terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def input_similarity_loss(embeddings: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the cosine-similarity matrices of ``embeddings`` ``(n, d)``
    and of ``inputs`` ``(n, ...)`` flattened and centred on their batch mean.

    The input side is a fixed target (no gradient reaches the inputs). Identical geometry gives 0;
    the value is at most 4 (cosines lie in [-1, 1]).

    Example::

        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
        >>> float(input_similarity_loss(x, x))  # the embedding is the (centred) input itself
        0.0
        >>> round(float(input_similarity_loss(torch.ones(4, 2), x)), 4)  # all embeddings alike
        1.5
    """
    if embeddings.shape[0] != inputs.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings for {inputs.shape[0]} inputs")
    z = F.normalize(embeddings, dim=1)
    with torch.no_grad():
        x = inputs.flatten(1).to(embeddings.dtype)
        x = F.normalize(x - x.mean(0, keepdim=True), dim=1)
        target = x @ x.T
    return ((z @ z.T - target) ** 2).mean()
