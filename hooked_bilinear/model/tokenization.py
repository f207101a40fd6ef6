"""Tokenizer support: one adapter over `tokenizers.Tokenizer` and HF `transformers` tokenizers,
and the TL-style `to_tokens` / `to_string` / `to_str_tokens` / `to_single_token` methods."""

from __future__ import annotations

import warnings
from typing import Any, Literal, Optional, Sequence, Union

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError

PAD_CANDIDATES = ("[PAD]", "<pad>", "[EOS]", "<|endoftext|>", "</s>", "<eos>")
# A vocabulary entry with one of these names is the BOS; `<|endoftext|>` (GPT-2's BOS in TL) only
# when the tokenizer marks it special.
BOS_NAMES = ("[BOS]", "<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>")
BOS_SPECIAL_ONLY = ("<|endoftext|>",)


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

    @property
    def bos_token_id(self) -> Optional[int]:
        """The tokenizer's BOS: a transformers tokenizer's `bos_token_id`; for a `tokenizers.Tokenizer`, the
        token its post-processor puts in front, else a special token named like a BOS (`[BOS]`, `<s>`,
        `<|endoftext|>`, ...), else a vocabulary entry with an explicit BOS name. None if it has none."""
        if not self.is_fast_raw:
            return getattr(self.tokenizer, "bos_token_id", None)
        if not hasattr(self, "_bos"):
            self._bos = self._find_raw_bos()
        return self._bos

    def _find_raw_bos(self) -> Optional[int]:
        t = self.tokenizer
        try:
            plain = t.encode("a", add_special_tokens=False).ids
            full = t.encode("a", add_special_tokens=True).ids
        except Exception:  # noqa: BLE001 - a vocabulary without "a" and without an unknown token
            plain = full = []
        k = len(full) - len(plain)
        if plain and k > 0 and any(full[i:i + len(plain)] == plain for i in range(1, k + 1)):
            return full[0]  # the post-processor put something in front of the text: its BOS
        specials = {tok.content: i for i, tok in t.get_added_tokens_decoder().items() if tok.special}
        for name in BOS_NAMES + BOS_SPECIAL_ONLY:
            if name in specials:
                return specials[name]
        for name in BOS_NAMES:
            tid = t.token_to_id(name)
            if tid is not None:
                return tid
        return None

    def unknown_words(self, text: str) -> list[str]:
        """The whitespace-separated words of `text` that the vocabulary lacks (for error messages)."""
        return [w for w in text.split() if self.token_id(w) is None]

    def save(self, directory: str) -> None:
        if self.is_fast_raw:
            self.tokenizer.save(f"{directory}/tokenizer.json")
        else:
            self.tokenizer.save_pretrained(directory)


class TokenizationMixin:
    """TL's tokenization surface; needs `self.tokenizer` (a TokenizerAdapter or None) and `self.cfg`.

    BOS follows TransformerLens: `prepend_bos=None` means `cfg.default_prepend_bos`; True puts the
    tokenizer's BOS (`TokenizerAdapter.bos_token_id`) in front of every string and raises if it has
    none; padding goes on `padding_side` (default `cfg.default_padding_side`, "right").
    """

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
        padding_side: Optional[Literal["left", "right"]] = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Tensor:
        """Tokenize a string or list of strings -> int64 [batch, pos] (TL's signature).

        Args:
            input: a string or a list of strings (padded to the longest with the pad token).
            prepend_bos: put the tokenizer's BOS first (default `cfg.default_prepend_bos`).
            padding_side: "left" or "right" (default `cfg.default_padding_side`).
            move_to_device: put the tokens on `cfg.device`.
            truncate: cut every sequence to `n_ctx` tokens, with a warning saying how many were cut
                (TL cuts silently). Without it, the model's forward raises for sequences over n_ctx.

        Raises:
            InputError: no tokenizer, empty input, `prepend_bos=True` with a tokenizer that has no BOS,
                or words the vocabulary lacks (a tokenizer without an unknown token).
        """
        tokens, _ = self._encode(input, prepend_bos, truncate, padding_side)
        return tokens.to(self.cfg.device) if move_to_device else tokens.cpu()

    def _encode(self, input: Union[str, list[str]], prepend_bos: Optional[bool] = None, truncate: bool = True,
                padding_side: Optional[str] = None) -> tuple[Tensor, Tensor]:
        """`to_tokens`, plus the mask [batch, pos] that is False on the padding."""
        tok = self._require_tokenizer()
        prepend_bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        padding_side = padding_side or self.cfg.default_padding_side
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        texts = [input] if isinstance(input, str) else list(input)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InputError(f"to_tokens expects a string or a non-empty list of strings, got {input!r:.80}")
        bos = tok.bos_token_id if prepend_bos else None
        if prepend_bos and bos is None:
            raise InputError("prepend_bos=True but the tokenizer declares no BOS token (no post-processor BOS, "
                             f"no special token named one of {BOS_NAMES + BOS_SPECIAL_ONLY}); pass prepend_bos=False")
        ids = [([bos] if prepend_bos else []) + self._encode_one(tok, t) for t in texts]
        n_ctx = self.cfg.n_ctx
        if truncate and any(len(x) > n_ctx for x in ids):
            longest = max(len(x) for x in ids)
            warnings.warn(f"to_tokens cut the input from {longest} to n_ctx={n_ctx} tokens (truncate=True); "
                          "pass truncate=False to keep every token", stacklevel=3)
            ids = [x[:n_ctx] for x in ids]
        width = max(len(x) for x in ids)
        if width == 0:
            raise InputError(f"{input!r:.80} tokenizes to an empty sequence")
        out = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, x in enumerate(ids):
            cols = slice(0, len(x)) if padding_side == "right" else slice(width - len(x), width)
            out[row, cols] = torch.tensor(x, dtype=torch.long)
            mask[row, cols] = True
        return out.to(self.cfg.device), mask.to(self.cfg.device)

    @staticmethod
    def _encode_one(tok: TokenizerAdapter, text: str) -> list[int]:
        try:
            return tok.encode(text, add_special_tokens=False)
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception ("WordLevel error: ...")
            unknown = tok.unknown_words(text)
            what = f"the words {unknown}" if unknown else "something"
            raise InputError(f"{text!r:.80} contains {what} that the tokenizer's vocabulary of {tok.vocab_size} "
                             f"tokens lacks, and it has no unknown token ({e})") from None

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

    def to_single_str_token(self, int_token: int) -> str:
        """The string of one token id (TL's name)."""
        if not isinstance(int_token, int) or isinstance(int_token, bool) or not 0 <= int_token < self.cfg.d_vocab:
            raise InputError(f"to_single_str_token needs one token id in [0, d_vocab={self.cfg.d_vocab}), "
                             f"got {int_token!r}")
        return self.to_str_tokens(torch.tensor([int_token]))[0]

    def get_token_position(
        self,
        single_token: Union[str, int],
        input: Union[str, Tensor],
        mode: Literal["first", "last"] = "first",
        prepend_bos: Optional[bool] = None,
        padding_side: Optional[Literal["left", "right"]] = None,
    ) -> int:
        """The position of `single_token` (a one-token string or an id) in `input` (a string or tokens [pos] /
        [1, pos]), counting the BOS when one is prepended (TL's semantics).

        Raises:
            InputError: the token does not occur, `mode` is unknown, or `input` is a batch.
        """
        if mode not in ("first", "last"):
            raise InputError(f"mode must be 'first' or 'last', got {mode!r}")
        tokens = (self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)
                  if isinstance(input, str) else torch.as_tensor(input))
        if tokens.ndim == 2 and tokens.shape[0] == 1:
            tokens = tokens[0]
        if tokens.ndim != 1:
            raise InputError(f"get_token_position needs one sequence, got tokens of shape {tuple(tokens.shape)}")
        tid = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        where = (tokens == tid).nonzero().flatten().tolist()
        if not where:
            raise InputError(f"token {single_token!r} (id {tid}) does not occur in the input {tokens.tolist()}")
        return where[0] if mode == "first" else where[-1]
