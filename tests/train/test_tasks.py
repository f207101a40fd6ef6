"""Datasets: shapes, formats, splits and determinism."""

import pytest
import torch

from hooked_bilinear.train.tasks import (
    chunk_tokens,
    digits,
    induction_metrics,
    induction_tokenizer,
    modular_addition,
    repeated_tokens,
    stdlib_corpus,
    tokens_to_text,
    train_bpe_tokenizer,
    varied_repeats,
)
from hooked_bilinear.train.tasks.corpus import EOS, stdlib_files


def test_modular_addition_format_and_split():
    p = 113
    train, test = modular_addition(p, 0.3, seed=0)
    assert train["tokens"].shape == (round(0.3 * p * p), 3) and train["tokens"].dtype == torch.long
    assert train["tokens"].shape[0] + test["tokens"].shape[0] == p * p
    for split in (train, test):
        a, b, eq = split["tokens"].T
        assert (eq == p).all() and (a < p).all() and (b < p).all()
        assert torch.equal(split["labels"], (a + b) % p)
    pairs = {tuple(t[:2].tolist()) for t in torch.cat([train["tokens"], test["tokens"]])}
    assert len(pairs) == p * p
    again, _ = modular_addition(p, 0.3, seed=0)
    other, _ = modular_addition(p, 0.3, seed=1)
    assert torch.equal(again["tokens"], train["tokens"])
    assert not torch.equal(other["tokens"], train["tokens"])


@pytest.mark.parametrize("kwargs", [dict(p=1), dict(train_fraction=0.0), dict(train_fraction=1.0)])
def test_modular_addition_errors(kwargs):
    with pytest.raises(ValueError):
        modular_addition(**kwargs)


def test_repeated_tokens_canonical():
    data = repeated_tokens(5, half_len=8, d_vocab=20, seed=3)
    tokens = data["tokens"]
    assert tokens.shape == (5, 17) and (tokens[:, 0] == 0).all()
    assert ((tokens[:, 1:] >= 1) & (tokens[:, 1:] < 20)).all()
    assert torch.equal(tokens[:, 1:9], tokens[:, 9:])
    assert data["first_mask"][0].nonzero().flatten().tolist() == list(range(1, 9))
    assert data["repeat_mask"][0].nonzero().flatten().tolist() == list(range(10, 17))
    assert torch.equal(repeated_tokens(5, 8, 20, seed=3)["tokens"], tokens)


def test_repeated_tokens_with_offsets():
    data = repeated_tokens(200, half_len=10, d_vocab=50, seed=0, max_offset=6)
    tokens, repeat = data["tokens"], data["repeat_mask"]
    periods = set()
    for row, mask in zip(tokens, repeat):
        second = int(mask.nonzero()[0]) - 1  # first position of the repeat
        h = (tokens.shape[1] - second)
        periods.add(h)
        assert torch.equal(row[second:], row[second - h : second])
    assert periods == {7, 8, 9, 10}
    with pytest.raises(ValueError, match="max_offset"):
        repeated_tokens(2, half_len=4, max_offset=3)


def test_repeated_tokens_without_bos_drops_only_the_bos_column():
    with_bos = repeated_tokens(4, half_len=6, d_vocab=20, seed=5)
    without = repeated_tokens(4, half_len=6, d_vocab=20, seed=5, bos=False)
    assert torch.equal(without["tokens"], with_bos["tokens"][:, 1:]) and (without["tokens"] > 0).all()
    assert without["first_mask"][0].nonzero().flatten().tolist() == list(range(1, 6))  # targets of the first copy
    assert without["repeat_mask"][0].nonzero().flatten().tolist() == list(range(7, 12))


def test_varied_repeats_rows_repeat_with_their_period():
    data = varied_repeats(300, length=40, d_vocab=30, min_period=4, seed=1)
    tokens, first, repeat = data["tokens"], data["first_mask"], data["repeat_mask"]
    assert tokens.shape == first.shape == repeat.shape == (300, 40)
    periods, bos_rows, prefixed = set(), 0, 0
    for row, f, r in zip(tokens, first, repeat):
        has_bos = int(row[0]) == 0
        bos_rows += has_bos
        assert (row[int(has_bos):] > 0).all() and (row < 30).all()  # 0 only as the first token
        second = int(r.nonzero()[0]) - 1  # first position of the second copy
        # brute force: the smallest P in range such that row[t] == row[t - P] for every t >= second
        period = next(p for p in range(4, 20) if bool((row[second:] == row[second - p : 40 - p]).all())
                      and second - p >= int(has_bos))
        periods.add(period)
        block_start = second - period
        prefixed += block_start > int(has_bos)
        assert f[1:second].all() and not f[second:].any() and not f[0]
        assert r[second + 1:].all() and not r[: second + 1].any()
    assert min(periods) == 4 and max(periods) == 19  # (40 - 1) // 2
    assert 90 < bos_rows < 210 and 50 < prefixed < 250
    assert torch.equal(varied_repeats(300, 40, 30, min_period=4, seed=1)["tokens"], tokens)


def test_varied_repeats_never_draws_an_excluded_period():
    held_out = (3, 5, 11, 16)
    data = varied_repeats(400, length=40, d_vocab=30, min_period=2, max_period=18, exclude_periods=held_out,
                          p_prefix=0.0, seed=2)
    periods = set()
    for row, r in zip(data["tokens"], data["repeat_mask"]):
        second = int(r.nonzero()[0]) - 1  # first position of the second copy; no prefix, so it is start + period
        start = int(int(row[0]) == 0)
        period = second - start
        assert bool((row[second:] == row[second - period : 40 - period]).all())  # the row really repeats with it
        periods.add(period)
    assert periods == set(range(2, 19)) - set(held_out)  # every other period, none of the held-out ones


@pytest.mark.parametrize("kwargs", [dict(min_period=1), dict(min_period=10, max_period=9), dict(max_period=20),
                                    dict(d_vocab=2), dict(n=0), dict(min_period=4, max_period=5, exclude_periods=(4, 5))])
def test_varied_repeats_errors(kwargs):
    args = dict(n=2, length=40, d_vocab=30) | kwargs
    with pytest.raises(ValueError):
        varied_repeats(**args)


def test_induction_tokenizer_has_a_special_bos_it_prepends_on_request():
    tok = induction_tokenizer(16)
    assert tok.token_to_id("[BOS]") == 0
    assert tok.encode("t3 t5").ids == [0, 3, 5]  # add_special_tokens=True: BOS first
    assert tok.encode("t3 t5", add_special_tokens=False).ids == [3, 5]
    assert tok.decode([0, 3], skip_special_tokens=True) == "t3"
    added = [t for t in tok.get_added_tokens_decoder().items()]
    assert [(i, t.content, t.special) for i, t in added] == [(0, "[BOS]", True)]


def test_induction_tokenizer_roundtrip():
    tok = induction_tokenizer(16)
    tokens = repeated_tokens(1, half_len=4, d_vocab=16, seed=0)["tokens"][0]
    assert tok.encode(tokens_to_text(tokens), add_special_tokens=False).ids == tokens.tolist()
    assert tok.get_vocab_size() == 16


def test_induction_metrics_of_a_perfect_copier():
    class Copier(torch.nn.Module):
        """Predicts the token that followed the previous occurrence of the current token (period 4)."""

        def forward(self, tokens):
            logits = torch.zeros(*tokens.shape, 16)
            logits[:, 4:, :].scatter_(-1, tokens[:, 1:-3, None], 100.0)
            return logits

    metrics = induction_metrics(Copier(), repeated_tokens(3, half_len=4, d_vocab=16, seed=0))
    assert metrics["loss_repeated_half"] < 1e-6 and metrics["repeated_accuracy"] == 1.0
    assert metrics["loss_first_half"] > 1.0


def test_digits_split():
    train, test = digits(test_fraction=0.2, seed=0)
    assert train["images"].shape[1] == 64 and train["images"].dtype == torch.float32
    assert train["images"].shape[0] + test["images"].shape[0] == 1797 and test["images"].shape[0] == 359
    assert train["images"].min() >= 0 and train["images"].max() <= 1 and train["images"].max() == 1
    assert set(test["labels"].tolist()) == set(range(10))
    again, _ = digits(0.2, seed=0)
    assert torch.equal(again["images"], train["images"]) and torch.equal(again["labels"], train["labels"])


def test_stdlib_corpus_is_deterministic_and_split_by_file():
    files = stdlib_files()
    assert files == sorted(files) and len(files) > 20
    train, heldout = stdlib_corpus(heldout_every=10)
    assert len(train) + len(heldout) == len(files) and len(heldout) == len(files) // 10
    assert heldout[0] == files[9].read_text(encoding="utf-8", errors="replace")


def test_bpe_tokenizer_and_chunks():
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in stdlib_files()[:3]]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    assert tok.get_vocab_size() == 400 and tok.token_to_id(EOS) == 0
    assert tok.to_str() == train_bpe_tokenizer(texts, vocab_size=400).to_str()
    assert tok.decode(tok.encode(texts[0][:500]).ids) == texts[0][:500]
    chunks = chunk_tokens(tok, texts, n_ctx=64)["tokens"]
    assert chunks.ndim == 2 and chunks.shape[1] == 64 and chunks.dtype == torch.long
    assert int((chunks == 0).sum()) in (2, 3)  # one separator after each document (the last may be cut)
    with pytest.raises(ValueError, match="fewer than one window"):
        chunk_tokens(tok, ["x"], n_ctx=64)
