"""Autoregressive sampling: greedy, temperature and top-k, on strings or token tensors."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError


class GenerationMixin:
    """`generate` for a model with `forward(tokens) -> logits`, `cfg.n_ctx` and an optional tokenizer."""

    @torch.no_grad()
    def generate(
        self,
        input: Union[str, Tensor],
        max_new_tokens: int = 20,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        do_sample: bool = True,
        generator: Optional[torch.Generator] = None,
        stop_at_eos: bool = True,
        prepend_bos: Optional[bool] = None,
        verbose: bool = False,
        use_past_kv_cache: bool = True,
    ) -> Union[str, Tensor]:
        """Extend `input` by up to `max_new_tokens` tokens.

        Args:
            input: a string (needs a tokenizer; returns a string) or token ids [batch, pos] / [pos]
                (returns token ids [batch, pos + new]).
            temperature: softmax temperature; 0 (or `do_sample=False`) means greedy.
            top_k: sample only among the k most likely tokens.
            generator: a `torch.Generator` for reproducible sampling.
            stop_at_eos: stop once every sequence has produced the tokenizer's EOS.
            verbose: show a progress bar.
            use_past_kv_cache: keep every position's keys and values (a `KeyValueCache`), so each new token
                costs a one-position forward instead of one over the whole sequence (the same tokens:
                greedy output is identical). Past `n_ctx` tokens the window slides, and each step
                then recomputes the window, as without the cache.

        Example:
            >>> out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5, do_sample=False)  # doctest: +SKIP
        """
        from hooked_bilinear.progress import tqdm

        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise InputError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and not 0 < top_k <= self.cfg.d_vocab:
            raise InputError(f"top_k must be in [1, d_vocab={self.cfg.d_vocab}], got {top_k}")
        as_string = isinstance(input, str)
        tokens = self.to_tokens(input, prepend_bos=prepend_bos) if as_string else torch.as_tensor(input)
        if tokens.ndim == 1:
            tokens = tokens[None]
        tokens = tokens.to(self.cfg.device)
        eos = self.tokenizer.eos_token_id if (stop_at_eos and self.tokenizer is not None) else None
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        greedy = not do_sample or temperature == 0
        was_training = self.training
        self.eval()
        cache = None
        try:
            for _ in tqdm(range(max_new_tokens), disable=not verbose, desc="generate"):
                # the cache holds softmax attention's keys and values; bilinear attention recomputes
                cacheable = getattr(self.cfg, "attention", "softmax") == "softmax"
                if use_past_kv_cache and cacheable and tokens.shape[1] <= self.cfg.n_ctx:
                    if cache is None:
                        from hooked_bilinear.model.kv_cache import KeyValueCache

                        cache = KeyValueCache(self.cfg.n_layers)
                        step_input = tokens
                    else:
                        step_input = tokens[:, -1:]
                    logits = self(step_input, past_kv_cache=cache)[:, -1, :].float()
                else:
                    logits = self(tokens[:, -self.cfg.n_ctx:])[:, -1, :].float()
                if greedy:
                    nxt = logits.argmax(-1)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = logits.topk(top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = torch.softmax(logits, dim=-1)
                    nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(tokens.device)
                if eos is not None:
                    nxt = torch.where(finished, torch.full_like(nxt, eos), nxt)
                    finished |= nxt == eos
                tokens = torch.cat([tokens, nxt[:, None]], dim=1)
                if eos is not None and bool(finished.all()):
                    break
        finally:
            self.train(was_training)
        return self.to_string(tokens[0]) if as_string else tokens
