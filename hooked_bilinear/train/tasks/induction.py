"""Repeated random token sequences: the task that makes induction heads.

A sequence is `[BOS] x_1 .. x_h x_1 .. x_h` with random `x_i` in `[1, d_vocab)`. The first copy is
unpredictable (loss ≈ ln(d_vocab - 1)); the repeated copy is predictable by an induction head
(attend to the token after the previous occurrence of the current token, copy it).

With `max_offset > 0` a random even-length prefix of `2j` random tokens (`j ≤ max_offset // 2`)
precedes a shorter repeat (`h = half_len - j`), so the period varies and a purely positional
"look back h - 1 places" head cannot solve the task: only content-based induction can.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hooked_bilinear.train.losses import Batch

BOS = 0


def repeated_tokens(
    n: int, half_len: int = 32, d_vocab: int = 64, seed: int = 0, max_offset: int = 0,
    generator: torch.Generator | None = None,
) -> Batch:
    """`n` sequences of length `1 + 2 * half_len`: BOS, (prefix,) a random block and its repeat.

    Args:
        n: number of sequences.
        half_len: length of each half (of the random block when `max_offset` is 0).
        d_vocab: model vocabulary; token 0 is BOS, random tokens are drawn from [1, d_vocab).
        seed: seed (ignored when `generator` is given).
        max_offset: largest prefix length (see the module docstring); 0 gives the canonical format.
        generator: draw from this generator instead of a fresh seeded one.

    Returns:
        `{"tokens": int64 [n, 1 + 2 half_len], "first_mask": bool [n, pos], "repeat_mask": bool [n, pos]}`;
        `first_mask` marks the targets before the repeat (prefix and first copy), `repeat_mask` the
        repeated copy except its first token (which no model can know is a repeat).
    """
    if half_len < 2 or d_vocab < 3 or n < 1:
        raise ValueError(f"need n >= 1, half_len >= 2, d_vocab >= 3; got n={n}, half_len={half_len}, d_vocab={d_vocab}")
    if not 0 <= max_offset <= half_len - 2:
        raise ValueError(f"max_offset must be in [0, half_len - 2 = {half_len - 2}], got {max_offset}")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    length = 1 + 2 * half_len
    tokens = torch.randint(1, d_vocab, (n, length), generator=gen)
    tokens[:, 0] = BOS
    j = torch.randint(0, max_offset // 2 + 1, (n,), generator=gen)
    h = half_len - j
    start = 1 + 2 * j  # first position of the random block
    pos = torch.arange(length)
    second = start[:, None] + h[:, None]  # first position of the repeat
    in_repeat = pos[None] >= second
    source = torch.where(in_repeat, pos[None] - h[:, None], pos[None])
    tokens = tokens.gather(1, source)
    first_mask = (pos[None] >= 1) & ~in_repeat
    repeat_mask = pos[None] > second
    return {"tokens": tokens, "first_mask": first_mask, "repeat_mask": repeat_mask}


def repeated_tokens_sampler(half_len: int = 32, d_vocab: int = 64, max_offset: int = 0) -> Callable[[torch.Generator, int], Batch]:
    """A batch function `(generator, batch_size) -> batch` for `train`: fresh sequences every step."""

    def sample(generator: torch.Generator, batch_size: int) -> Batch:
        return repeated_tokens(batch_size, half_len, d_vocab, max_offset=max_offset, generator=generator)

    return sample


@torch.no_grad()
def induction_metrics(model: nn.Module, data: Batch) -> dict[str, float]:
    """Next-token loss overall, on the first half, and on the repeated half.

    Returns:
        `{"loss", "loss_first_half", "loss_repeated_half", "repeated_accuracy"}`.
    """
    was_training = model.training
    model.eval()
    try:
        tokens = data["tokens"]
        logits = model(tokens)
        nll = -F.log_softmax(logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None])[..., 0]
        correct = logits[:, :-1].argmax(-1) == tokens[:, 1:]
        first, repeat = data["first_mask"][:, 1:], data["repeat_mask"][:, 1:]
        return {
            "loss": nll.mean().item(),
            "loss_first_half": nll[first].mean().item(),
            "loss_repeated_half": nll[repeat].mean().item(),
            "repeated_accuracy": correct[repeat].float().mean().item(),
        }
    finally:
        model.train(was_training)


def induction_tokenizer(d_vocab: int = 64):
    """A word-level `tokenizers.Tokenizer`: "[BOS]" is id 0 and "t{i}" is id i, split on whitespace.

    It lets TL utilities that take strings (e.g. `head_detector.detect_head`) run on the model.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[BOS]": BOS, **{f"t{i}": i for i in range(1, d_vocab)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def tokens_to_text(tokens: torch.Tensor) -> str:
    """The string that `induction_tokenizer` encodes back to the 1-D `tokens`."""
    return " ".join("[BOS]" if int(t) == BOS else f"t{int(t)}" for t in tokens)
