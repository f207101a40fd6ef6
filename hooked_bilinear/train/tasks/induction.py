"""Repeated random token sequences: the task that makes induction heads.

A sequence is `[BOS] x_1 .. x_h x_1 .. x_h` with random `x_i` in `[1, d_vocab)`. The first copy is
unpredictable (loss ≈ ln(d_vocab - 1)); the repeated copy is predictable by an induction head
(attend to the token after the previous occurrence of the current token, copy it).

With `max_offset > 0` a random even-length prefix of `2j` random tokens (`j ≤ max_offset // 2`)
precedes a shorter repeat (`h = half_len - j`), so the period varies and a purely positional
"look back h - 1 places" head cannot solve the task: only content-based induction can.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hooked_bilinear.train.losses import Batch

BOS = 0


def repeated_tokens(
    n: int, half_len: int = 32, d_vocab: int = 64, seed: int = 0, max_offset: int = 0,
    generator: torch.Generator | None = None, bos: bool = True,
) -> Batch:
    """`n` sequences of length `1 + 2 * half_len`: BOS, (prefix,) a random block and its repeat.

    Args:
        n: number of sequences.
        half_len: length of each half (of the random block when `max_offset` is 0).
        d_vocab: model vocabulary; token 0 is BOS, random tokens are drawn from [1, d_vocab).
        seed: seed (ignored when `generator` is given).
        max_offset: largest prefix length (see the module docstring); 0 gives the canonical format.
        generator: draw from this generator instead of a fresh seeded one.
        bos: start with BOS (token 0); with False the BOS column is dropped (length `2 * half_len`).

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
    out = {"tokens": tokens, "first_mask": first_mask, "repeat_mask": repeat_mask}
    if not bos:  # same draws, BOS column removed; position 0 is then a target of nothing
        out = {k: v[:, 1:] for k, v in out.items()}
        out["first_mask"][:, 0] = False
    return out


def varied_repeats(
    n: int, length: int = 128, d_vocab: int = 64, min_period: int = 4, max_period: int | None = None,
    p_bos: float = 0.5, p_prefix: float = 0.5, seed: int = 0, generator: torch.Generator | None = None,
    exclude_periods: Sequence[int] = (),
) -> Batch:
    """`n` sequences of `length` tokens that repeat a random block with a random period, BOS or not.

    Each row independently: BOS (token 0) first with probability `p_bos`; then, with probability
    `p_prefix`, a prefix of `r` random tokens (`r` uniform in [0, room - 2P]); then a block of `P`
    random tokens (`P` uniform in [`min_period`, `max_period`] minus `exclude_periods`) tiled to the
    end of the row, so the block occurs at least twice. Every shorter sequence of this kind (e.g.
    `[BOS] x x`, or `x x` without BOS) is a prefix of some row, so a causal model trained on these sees
    all of them.

    Args:
        n: number of sequences.
        length: tokens per row (use the model's `n_ctx`).
        d_vocab: vocabulary; random tokens are uniform in [1, d_vocab) (with replacement).
        min_period, max_period: period range; `max_period` defaults to `(length - 1) // 2`.
        p_bos: probability that a row starts with BOS.
        p_prefix: probability of a random prefix before the block.
        seed: seed (ignored when `generator` is given).
        generator: draw from this generator instead of a fresh seeded one.
        exclude_periods: periods never drawn (held out from training, to test that a model
            does induction at periods it never saw).

    Returns:
        `{"tokens": int64 [n, length], "first_mask", "repeat_mask": bool [n, length]}`: `first_mask`
        marks the targets before the second copy, `repeat_mask` the targets from the second copy's
        second token on (its first token cannot be known to repeat).

    Raises:
        ValueError: a period range that does not fit twice in a row after BOS, or exclusions that
            leave no period.
    """
    max_period = (length - 1) // 2 if max_period is None else max_period
    if not (2 <= min_period <= max_period and 1 + 2 * max_period <= length) or d_vocab < 3 or n < 1:
        raise ValueError(f"need n >= 1, d_vocab >= 3 and 2 <= min_period <= max_period <= (length - 1) // 2 = "
                         f"{(length - 1) // 2}; got n={n}, d_vocab={d_vocab}, periods [{min_period}, {max_period}]")
    excluded = set(exclude_periods)
    allowed = [p for p in range(min_period, max_period + 1) if p not in excluded]
    if not allowed:
        raise ValueError(f"exclude_periods={list(exclude_periods)} leaves no period in [{min_period}, {max_period}]")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    random = torch.randint(1, d_vocab, (n, length), generator=gen)
    has_bos = torch.rand(n, generator=gen) < p_bos
    if len(allowed) == max_period - min_period + 1:
        period = torch.randint(min_period, max_period + 1, (n,), generator=gen)
    else:
        period = torch.tensor(allowed)[torch.randint(0, len(allowed), (n,), generator=gen)]
    room = length - has_bos.long() - 2 * period  # >= 0
    prefix = torch.where(torch.rand(n, generator=gen) < p_prefix,
                         (torch.rand(n, generator=gen) * (room + 1)).long().clamp(max=room), 0)
    start = has_bos.long() + prefix  # first position of the block
    pos = torch.arange(length)[None]
    offset = (pos - start[:, None]).clamp(min=0)
    source = torch.where(pos >= start[:, None], start[:, None] + offset % period[:, None], pos)
    tokens = random.gather(1, source)
    tokens[has_bos, 0] = BOS
    second = start + period  # first position of the second copy
    first_mask = (pos >= 1) & (pos < second[:, None])
    repeat_mask = pos > second[:, None]
    return {"tokens": tokens, "first_mask": first_mask, "repeat_mask": repeat_mask}


def varied_repeats_sampler(length: int = 128, d_vocab: int = 64, **kwargs) -> Callable[[torch.Generator, int], Batch]:
    """A batch function `(generator, batch_size) -> batch` for `train` drawing `varied_repeats` rows."""

    def sample(generator: torch.Generator, batch_size: int) -> Batch:
        return varied_repeats(batch_size, length, d_vocab, generator=generator, **kwargs)

    return sample


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


def induction_by_period(
    model: nn.Module, periods: Sequence[int], d_vocab: int, n: int = 100, seed: int = 0,
    bos_settings: Sequence[bool] = (True, False),
) -> list[dict[str, float]]:
    """`induction_metrics` on `[BOS] x x` and `x x` (x: `period` random tokens) for each period and BOS setting.

    The sequences are `repeated_tokens(n, period, d_vocab, seed=seed + period, bos=bos)`: TL's
    induction demo format (random tokens, repeated once), without any prefix.

    Returns:
        One record per (period, bos): `{"period", "bos", "loss_first_half", "loss_repeated_half",
        "repeated_accuracy", "loss_first_repeated", "loss_rest_repeated"}`; the last two split the
        repeated half into its first target (predicted after one matching token, which may be a
        coincidence) and the rest (two or more matching tokens in a row).
    """
    was_training = model.training
    model.eval()
    rows = []
    try:
        for period in periods:
            for bos in bos_settings:
                data = repeated_tokens(n, period, d_vocab, seed=seed + period, bos=bos)
                m = induction_metrics(model, data)
                tokens = data["tokens"]
                with torch.no_grad():
                    logits = model(tokens)
                nll = -F.log_softmax(logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None])[..., 0]
                repeat = nll[data["repeat_mask"][:, 1:]].reshape(n, period - 1)
                rows.append({"period": int(period), "bos": bool(bos), "loss_first_half": m["loss_first_half"],
                             "loss_repeated_half": m["loss_repeated_half"],
                             "repeated_accuracy": m["repeated_accuracy"],
                             "loss_first_repeated": repeat[:, 0].mean().item(),
                             "loss_rest_repeated": repeat[:, 1:].mean().item()})
    finally:
        model.train(was_training)
    return rows


def induction_tokenizer(d_vocab: int = 64):
    """A word-level `tokenizers.Tokenizer`: "[BOS]" is id 0 and "t{i}" is id i, split on whitespace.

    "[BOS]" is a special added token, and the post-processor puts it first when special tokens are
    asked for (`encode(text, add_special_tokens=True)`, i.e. `prepend_bos=True`), as HF tokenizers
    of BOS models do. It lets TL utilities that take strings (e.g. `head_detector.detect_head`) run
    on the model.
    """
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    vocab = {"[BOS]": BOS, **{f"t{i}": i for i in range(1, d_vocab)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken("[BOS]", special=True, normalized=False)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", pair="[BOS] $A [BOS] $B:1", special_tokens=[("[BOS]", BOS)])
    return tokenizer


def tokens_to_text(tokens: torch.Tensor) -> str:
    """The string that `induction_tokenizer` encodes back to the 1-D `tokens`."""
    return " ".join("[BOS]" if int(t) == BOS else f"t{int(t)}" for t in tokens)
