"""Tokenizer support: one adapter over `tokenizers.Tokenizer` and HF `transformers` tokenizers,
and the TL-style `to_tokens` / `to_string` / `to_str_tokens` / `to_single_token` methods."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError

PAD_CANDIDATES = ("[PAD]", "<pad>", "[EOS]", "<|endoftext|>", "</s>", "<eos>")


class TokenizerAdapter:
    """Wraps a `tokenizers.Tokenizer` or a `transformers` tokenizer behind one small interface."""

    def __init__(self, tokenizer: Any):
        if isinstance(tokenizer, TokenizerAdapter):
            tokenizer = tokenizer.tokenizer
        self.tokenizer = tokenizer
        self.is_fast_raw = hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "id_to_token")
        if not self.is_fast_raw and not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise TypeError(
                f"tokenizer must be a tokenizers.Tokenizer or a transformers tokenizer, got {type(tokenizer).__name__}"
            )

    @property
    def vocab_size(self) -> int:
        t = self.tokenizer
        return t.get_vocab_size(with_added_tokens=True) if self.is_fast_raw else len(t)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        if self.is_fast_raw:
            return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_id(self, token: str) -> Optional[int]:
        if self.is_fast_raw:
            return self.tokenizer.token_to_id(token)
        tid = self.tokenizer.convert_tokens_to_ids(token)
        return None if tid == getattr(self.tokenizer, "unk_token_id", None) and token != self.tokenizer.unk_token else tid

    @property
    def pad_token_id(self) -> int:
        tid = getattr(self.tokenizer, "pad_token_id", None)
        if tid is not None:
            return tid
        padding = self.tokenizer.padding if self.is_fast_raw else None  # set by enable_padding
        if padding:
            return padding["pad_id"]
        for candidate in PAD_CANDIDATES:
            tid = self.token_id(candidate)
            if tid is not None:
                return tid
        return 0

    @property
    def eos_token_id(self) -> Optional[int]:
        tid = getattr(self.tokenizer, "eos_token_id", None)
        if tid is not None:
            return tid
        for candidate in ("[EOS]", "<|endoftext|>", "</s>", "<eos>"):
            tid = self.token_id(candidate)
            if tid is not None:
                return tid
        return None

    def save(self, directory: str) -> None:
        if self.is_fast_raw:
            self.tokenizer.save(f"{directory}/tokenizer.json")
        else:
            self.tokenizer.save_pretrained(directory)


class TokenizationMixin:
    """TL's tokenization surface; needs `self.tokenizer` (a TokenizerAdapter or None) and `self.cfg`."""

    tokenizer: Optional[TokenizerAdapter]

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Attach a `tokenizers.Tokenizer` or `transformers` tokenizer (None detaches)."""
        adapter = None if tokenizer is None else TokenizerAdapter(tokenizer)
        if adapter is not None and adapter.vocab_size > self.cfg.d_vocab:  # check before replacing the old one
            raise InputError(
                f"tokenizer has {adapter.vocab_size} tokens but the model's d_vocab is {self.cfg.d_vocab}"
            )
        self.tokenizer = adapter

    def _require_tokenizer(self) -> TokenizerAdapter:
        if self.tokenizer is None:
            raise InputError(
                "this model has no tokenizer attached: pass token ids as a tensor, or call model.set_tokenizer(...)"
            )
        return self.tokenizer

    def to_tokens(
        self,
        input: Union[str, list[str]],
        prepend_bos: Optional[bool] = None,
        truncate: bool = True,
    ) -> Tensor:
        """Tokenize a string or list of strings -> int64 [batch, pos] on the model's device.

        Lists are right-padded with the pad token. `prepend_bos` (default `cfg.default_prepend_bos`)
        adds the tokenizer's special tokens (its post-processor's BOS). With `truncate`, sequences
        are cut to `n_ctx`.
        """
        return self._encode(input, prepend_bos, truncate)[0]

    def _encode(self, input: Union[str, list[str]], prepend_bos: Optional[bool] = None,
                truncate: bool = True) -> tuple[Tensor, Tensor]:
        """`to_tokens`, plus the mask [batch, pos] that is False on the right padding."""
        tok = self._require_tokenizer()
        if prepend_bos is None:
            prepend_bos = self.cfg.default_prepend_bos
        texts = [input] if isinstance(input, str) else list(input)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InputError(f"to_tokens expects a string or a non-empty list of strings, got {input!r:.80}")
        ids = [tok.encode(t, add_special_tokens=prepend_bos) for t in texts]
        if truncate:
            ids = [x[: self.cfg.n_ctx] for x in ids]
        width = max(len(x) for x in ids)
        if width == 0:
            raise InputError(f"{input!r:.80} tokenizes to an empty sequence")
        out = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        for row, x in enumerate(ids):
            out[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask = torch.arange(width)[None, :] < torch.tensor([len(x) for x in ids])[:, None]
        return out.to(self.cfg.device), mask.to(self.cfg.device)

    def to_string(self, tokens: Union[Tensor, Sequence[int]]) -> Union[str, list[str]]:
        """Decode [pos] -> str, or [batch, pos] -> list of str."""
        tok = self._require_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            return [tok.decode(row.tolist()) for row in tokens]
        return tok.decode(tokens.reshape(-1).tolist())

    def to_str_tokens(self, input: Union[str, Tensor, Sequence[int]], prepend_bos: Optional[bool] = None) -> list[str]:
        """Each token of a string or a 1-D token sequence as its own string."""
        tok = self._require_tokenizer()
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos=prepend_bos)[0].tolist()
        else:
            t = torch.as_tensor(input)
            if t.ndim == 2 and t.shape[0] == 1:
                t = t[0]
            if t.ndim != 1:
                raise InputError(f"to_str_tokens needs a single sequence, got shape {tuple(t.shape)}")
            ids = t.tolist()
        return [tok.decode([i]) for i in ids]

    def to_single_token(self, string: str) -> int:
        """The id of a string that must be exactly one token (without BOS)."""
        ids = self.to_tokens(string, prepend_bos=False)[0]
        if ids.numel() != 1:
            raise InputError(f"{string!r} is {ids.numel()} tokens, not one: {ids.tolist()}")
        return int(ids.item())
