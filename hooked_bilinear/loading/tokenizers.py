"""Tokenizers of the public models: config key -> Hub repo, loaded from its `tokenizer.json`.

Only the `tokenizers` library is needed (no `transformers`): `Tokenizer.from_file` on the
downloaded tokenizer.json, with padding set to the pad token the models were trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.resolve import hub_file

# config key -> (Hub repos to try, in order; pad token)
TOKENIZERS = {
    "ts-4096": (("tdooms/ts-tokenizer-4096",), "[EOS]"),
    "mistral": (("mistral-community/Mixtral-8x22B-v0.1",), "</s>"),
    "gpt2": (("openai-community/gpt2",), "<|endoftext|>"),
}
TINYSTORIES_PREFIX = "TinyStories-"


def tokenizer_repos(key: str) -> tuple[tuple[str, ...], str]:
    """Hub repos holding the tokenizer `key`, and its pad token.

    `TinyStories-{n_vocab}` (older models) tries `tdooms/TinyStories-{n}` then the `-uncased`
    repo that the training code of that period used; a key with a slash is itself a repo.

    Raises:
        CheckpointError: an unknown key.
    """
    if key in TOKENIZERS:
        return TOKENIZERS[key]
    if key.startswith(TINYSTORIES_PREFIX):
        return (f"tdooms/{key}", f"tdooms/{key}-uncased"), "[EOS]"
    if "/" in key:
        return (key,), "[EOS]"
    raise CheckpointError(f"unknown tokenizer key {key!r}; expected one of {sorted(TOKENIZERS)} or a Hub repo id")


def pad_token(key: str) -> Optional[str]:
    """The pad token the models of tokenizer `key` were trained with (None if unknown)."""
    try:
        return tokenizer_repos(key)[1]
    except CheckpointError:
        return None


def read_tokenizer(path: Path, pad_token: Optional[str] = None):
    """A `tokenizers.Tokenizer` from a tokenizer.json, padding with `pad_token` when it exists."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise CheckpointError(f"{path} is not a valid tokenizers JSON file: {e}") from None
    pad_id = tokenizer.token_to_id(pad_token) if pad_token else None
    if pad_id is not None:
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def load_tokenizer(key: str, *, cache_dir: Optional[str] = None, revision: Optional[str] = None):
    """The tokenizer for config key `key` (e.g. "ts-4096"), from the HF cache or the Hub.

    Args:
        key: the checkpoint's `tokenizer` config value, `TinyStories-{n}`, or a Hub repo id.
        cache_dir: HF cache folder (default HF_HUB_CACHE); HF_HUB_OFFLINE=1 reads only the cache.
        revision: revision of the tokenizer repo.

    Raises:
        CheckpointError: unknown key, or tokenizer.json not available (every repo tried is named).

    Example:
        >>> tok = load_tokenizer("ts-4096")  # doctest: +SKIP
        >>> tok.encode("once upon a time").tokens  # doctest: +SKIP
    """
    repos, pad = tokenizer_repos(key)
    errors = []
    for repo in repos:
        try:
            path = hub_file(repo, "tokenizer.json", revision=revision, cache_dir=cache_dir)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        return read_tokenizer(path, pad)
    raise CheckpointError(f"tokenizer {key!r} is not available: " + "; ".join(errors))
