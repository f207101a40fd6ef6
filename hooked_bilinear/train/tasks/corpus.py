"""An offline language corpus: the top-level modules of the local Python standard library.

The text is the source (code and docstrings) of every `<stdlib>/*.py` file, read in sorted order,
so the corpus is fixed for a given Python installation and needs no network. Licence: the Python
Software Foundation License (permissive). Every `heldout_every`-th file (in sorted order) is held out,
so test text comes from modules never seen in training.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Optional, Sequence

import torch

from hooked_bilinear.train.losses import Batch

EOS = "<|endoftext|>"


def stdlib_files(stdlib_dir: Optional[str] = None) -> list[Path]:
    """Sorted top-level `*.py` files of the standard library (`sysconfig` "stdlib" path by default).

    Raises:
        FileNotFoundError: the folder holds no `.py` files (e.g. a zipped or frozen stdlib).
    """
    folder = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    files = sorted(folder.glob("*.py"))
    if not files:
        raise FileNotFoundError(f"no *.py files in {folder}: the stdlib corpus needs a source install of Python")
    return files


def stdlib_corpus(heldout_every: int = 10, stdlib_dir: Optional[str] = None) -> tuple[list[str], list[str]]:
    """Texts of the stdlib modules, split by file into (train, held-out).

    File i (0-based, sorted by name) is held out when `i % heldout_every == heldout_every - 1`.

    Returns:
        `(train_texts, heldout_texts)`, one string per module.
    """
    if heldout_every < 2:
        raise ValueError(f"heldout_every must be >= 2, got {heldout_every}")
    train, heldout = [], []
    for i, path in enumerate(stdlib_files(stdlib_dir)):
        text = path.read_text(encoding="utf-8", errors="replace")
        (heldout if i % heldout_every == heldout_every - 1 else train).append(text)
    return train, heldout


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int = 2048):
    """Train a byte-level BPE `tokenizers.Tokenizer` on `texts` (deterministic for fixed input).

    The special token `<|endoftext|>` has id 0; it separates documents and serves as pad.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + merges + specials), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return tokenizer


def chunk_tokens(tokenizer, texts: Sequence[str], n_ctx: int) -> Batch:
    """Encode `texts`, join them with `<|endoftext|>` and cut the stream into windows of `n_ctx`.

    The incomplete last window is dropped.

    Returns:
        `{"tokens": int64 [n_windows, n_ctx]}`.
    """
    eos = tokenizer.token_to_id(EOS)
    if eos is None:
        raise ValueError(f"the tokenizer has no {EOS!r} token")
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        stream.extend(encoding.ids)
        stream.append(eos)
    n = len(stream) // n_ctx
    if n == 0:
        raise ValueError(f"{len(stream)} tokens are fewer than one window of n_ctx={n_ctx}")
    return {"tokens": torch.tensor(stream[: n * n_ctx], dtype=torch.long).reshape(n, n_ctx)}


def stdlib_lm_data(n_ctx: int = 128, vocab_size: int = 2048, heldout_every: int = 10, tokenizer=None):
    """Tokenizer plus train / held-out windows of the stdlib corpus.

    Args:
        n_ctx: window length.
        vocab_size: BPE vocabulary size (ignored when `tokenizer` is given).
        heldout_every: see `stdlib_corpus`.
        tokenizer: reuse this tokenizer (e.g. a bundled model's) instead of training one.

    Returns:
        `(tokenizer, train, heldout)` with `train`/`heldout` = `{"tokens": int64 [n, n_ctx]}`.
    """
    train_texts, heldout_texts = stdlib_corpus(heldout_every)
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer(train_texts, vocab_size)
    return tokenizer, chunk_tokens(tokenizer, train_texts, n_ctx), chunk_tokens(tokenizer, heldout_texts, n_ctx)
