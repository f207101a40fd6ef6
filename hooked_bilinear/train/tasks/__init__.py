"""Toy tasks and small datasets, all offline and seeded: each returns dicts of tensors for `train`."""

from hooked_bilinear.train.tasks.corpus import chunk_tokens, stdlib_corpus, stdlib_lm_data, train_bpe_tokenizer
from hooked_bilinear.train.tasks.digits import digits
from hooked_bilinear.train.tasks.induction import (
    induction_by_period,
    induction_metrics,
    induction_tokenizer,
    repeated_tokens,
    repeated_tokens_sampler,
    tokens_to_text,
    varied_repeats,
    varied_repeats_sampler,
)
from hooked_bilinear.train.tasks.modular import modular_addition

__all__ = [
    "chunk_tokens",
    "digits",
    "induction_by_period",
    "induction_metrics",
    "induction_tokenizer",
    "modular_addition",
    "repeated_tokens",
    "repeated_tokens_sampler",
    "stdlib_corpus",
    "stdlib_lm_data",
    "tokens_to_text",
    "train_bpe_tokenizer",
    "varied_repeats",
    "varied_repeats_sampler",
]
