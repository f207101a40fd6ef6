"""Turn a corpus into token windows: a token tensor, a text file, a list of strings, or a local HF dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError


def _texts(corpus: Any, text_column: str) -> list[str]:
    if isinstance(corpus, (str, os.PathLike)):
        path = Path(corpus)
        if not path.is_file():
            raise InputError(f"corpus {str(corpus)!r} is not a file; pass a list of strings for raw text")
        return [path.read_text(encoding="utf-8", errors="replace")]
    if hasattr(corpus, "column_names") and hasattr(corpus, "__getitem__"):  # a datasets.Dataset
        if text_column not in corpus.column_names:
            raise InputError(f"the dataset has no column {text_column!r}; its columns are {corpus.column_names}")
        return [t for t in corpus[text_column] if isinstance(t, str)]
    if isinstance(corpus, (list, tuple)) and all(isinstance(t, str) for t in corpus):
        return list(corpus)
    raise InputError(f"corpus must be a token tensor [n, pos], a text file path, a list of strings or a datasets "
                     f"Dataset, got {type(corpus).__name__}")


def corpus_tokens(corpus: Union[Tensor, str, os.PathLike, list, Any], model, n_ctx: Optional[int] = None,
                  text_column: str = "text", max_windows: Optional[int] = None) -> Tensor:
    """Token windows `[n, pos]` of a corpus, for feature cards and dictionary training.

    Texts are encoded with the model's tokenizer, joined by its EOS/BOS token when it has one and cut
    into windows of `n_ctx` (default the model's); a stream shorter than one window is one window.

    Raises:
        InputError: an empty corpus, text that encodes to no tokens, a missing dataset column, or
            an unsupported type.
    """
    n_ctx = n_ctx or model.cfg.n_ctx
    if isinstance(corpus, Tensor):
        tokens = corpus[None] if corpus.ndim == 1 else corpus
        if tokens.ndim != 2 or tokens.numel() == 0 or tokens.dtype.is_floating_point:
            raise InputError(f"a token corpus must be a non-empty integer tensor [n, pos], got {tuple(corpus.shape)} "
                             f"{corpus.dtype}")
        return tokens[:max_windows]
    texts = [t for t in _texts(corpus, text_column) if t.strip()]
    if not texts:
        raise InputError("the corpus has no text (every entry is empty or whitespace)")
    if model.tokenizer is None:
        raise InputError("text corpora need a tokenizer on the model; pass token ids instead")
    sep = getattr(model.tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for text in texts:
        stream.extend(model.tokenizer.encode(text, add_special_tokens=False))
        if sep is not None:
            stream.append(sep)
    if sep is not None and stream:
        stream.pop()
    if not stream:
        raise InputError("the corpus encodes to no tokens")
    n = max(1, len(stream) // n_ctx)
    width = min(n_ctx, len(stream))
    tokens = torch.tensor(stream[: n * width], dtype=torch.long).reshape(n, width)
    return tokens[:max_windows]
