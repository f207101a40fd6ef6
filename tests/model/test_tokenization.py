"""Tokenizer support with tokenizers built in the test (WordLevel and a trained byte-level BPE)."""

import pytest
import torch

from hooked_bilinear import InputError

from ._factories import WORDS, make_bpe_tokenizer, make_model, make_wordlevel_tokenizer


@pytest.fixture
def word_model():
    return make_model(tokenizer=make_wordlevel_tokenizer())


@pytest.fixture(scope="module")
def bpe():
    return make_bpe_tokenizer()


def test_to_tokens_single_string(word_model):
    tokens = word_model.to_tokens("the cat sat")
    assert tokens.dtype == torch.long and tokens.tolist() == [[3, 4, 5]]


def test_to_tokens_pads_a_batch_on_the_right(word_model):
    tokens = word_model.to_tokens(["the cat sat on", "a dog"])
    pad = WORDS.index("[PAD]")
    assert tokens.tolist() == [[3, 4, 5, 6], [8, 9, pad, pad]]


def test_loss_of_a_padded_string_batch_skips_the_padding(word_model):
    long, short = "the cat sat on", "a dog"
    per_long = word_model(long, return_type="loss", loss_per_token=True)[0]     # 3 next-token losses
    per_short = word_model(short, return_type="loss", loss_per_token=True)[0]   # 1
    expected = torch.cat([per_long, per_short]).mean()
    loss = word_model([long, short], return_type="loss")
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    per_token = word_model([long, short], return_type="loss", loss_per_token=True)
    assert per_token[1, 1:].eq(0).all()
    torch.testing.assert_close(per_token[1, 0], per_short[0], rtol=1e-12, atol=0)
    # token tensors carry no padding information: every position counts, as in TransformerLens
    tokens = word_model.to_tokens([long, short])
    assert not torch.allclose(word_model(tokens, return_type="loss"), expected)


def test_pad_token_falls_back_to_eos_when_there_is_no_pad():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[EOS]": 0, "x": 1, "y": 2}, unk_token="[EOS]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    model = make_model(tokenizer=tok)
    assert model.to_tokens(["x y x", "y"]).tolist() == [[1, 2, 1], [2, 0, 0]]


def test_prepend_bos_uses_the_post_processor():
    model = make_model(tokenizer=make_wordlevel_tokenizer(bos=True))
    assert model.to_tokens("the cat").tolist() == [[3, 4]]  # cfg.default_prepend_bos is False
    assert model.to_tokens("the cat", prepend_bos=True).tolist() == [[2, 3, 4]]
    model.cfg.default_prepend_bos = True
    assert model.to_tokens("the cat").tolist() == [[2, 3, 4]]


def test_to_tokens_truncates_to_n_ctx(word_model):
    text = " ".join(["cat"] * 25)
    assert word_model.to_tokens(text).shape == (1, word_model.cfg.n_ctx)
    assert word_model.to_tokens(text, truncate=False).shape == (1, 25)


def test_to_string_and_to_str_tokens(word_model):
    tokens = word_model.to_tokens(["the cat sat", "a big red dog"])
    assert word_model.to_string(tokens[1]) == "a big red dog"
    assert word_model.to_string([3, 4]) == "the cat"
    assert word_model.to_string(tokens[:, :2]) == ["the cat", "a big"]
    assert word_model.to_str_tokens("the cat sat") == ["the", "cat", "sat"]
    assert word_model.to_str_tokens(torch.tensor([9, 10])) == ["dog", "ran"]
    assert word_model.to_str_tokens(torch.tensor([[9, 10]])) == ["dog", "ran"]


def test_to_str_tokens_needs_one_sequence(word_model):
    with pytest.raises(InputError, match=r"single sequence, got shape \(2, 2\)"):
        word_model.to_str_tokens(torch.tensor([[1, 2], [3, 4]]))


def test_to_single_token(word_model):
    assert word_model.to_single_token("dog") == 9
    with pytest.raises(InputError, match=r"'the cat' is 2 tokens, not one: \[3, 4\]"):
        word_model.to_single_token("the cat")


def test_string_input_to_forward(word_model):
    tokens = word_model.to_tokens("the cat sat on the mat")
    assert torch.equal(word_model("the cat sat on the mat"), word_model(tokens))
    batch = ["the cat sat", "a dog"]
    assert torch.equal(word_model(batch), word_model(word_model.to_tokens(batch)))
    loss = word_model("the cat sat on the mat", return_type="loss")
    assert torch.equal(loss, word_model(tokens, return_type="loss"))


def test_string_input_to_run_with_cache_and_hooks(word_model):
    logits, cache = word_model.run_with_cache("the big red dog")
    assert cache["hook_embed"].shape[:2] == (1, 4)
    seen = []
    word_model.run_with_hooks("the dog", fwd_hooks=[("hook_embed", lambda t, hook: seen.append(t.shape))])
    assert seen == [torch.Size([1, 2, 16])]


def test_bpe_round_trip(bpe):
    model = make_model(d_vocab=bpe.get_vocab_size(), tokenizer=bpe)
    text = "the red cat ran on a mat"
    tokens = model.to_tokens(text)
    assert tokens.max() < bpe.get_vocab_size()
    assert model.to_string(tokens[0]) == text
    assert "".join(model.to_str_tokens(text)) == text
    pieces = model.to_str_tokens(text)
    assert len(pieces) == tokens.shape[1] and len(pieces) < len(text)  # merges happened
    assert model(text).shape == (1, tokens.shape[1], model.cfg.d_vocab)


def test_bpe_single_token_and_multi_token(bpe):
    model = make_model(d_vocab=bpe.get_vocab_size(), tokenizer=bpe)
    the = model.to_single_token("the")
    assert model.to_string([the]) == "the"
    with pytest.raises(InputError, match="not one"):
        model.to_single_token("the zzz")


def test_transformers_tokenizer_is_accepted(bpe):
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="[PAD]", eos_token="[EOS]")
    model = make_model(d_vocab=bpe.get_vocab_size(), tokenizer=fast)
    text = "the cat sat"
    assert model.to_tokens(text).tolist() == [bpe.encode(text).ids]
    assert model.to_string(model.to_tokens(text)[0]) == text
    assert model.tokenizer.pad_token_id == 0 and model.tokenizer.eos_token_id == 1


def test_tokenizer_larger_than_the_vocabulary_is_refused():
    with pytest.raises(InputError, match=r"tokenizer has 13 tokens but the model's d_vocab is 8"):
        make_model(d_vocab=8, tokenizer=make_wordlevel_tokenizer())


def test_tokenizer_can_be_attached_and_detached(tokenizer):
    model = make_model()
    model.set_tokenizer(tokenizer)
    assert model.to_single_token("cat") == 4
    model.set_tokenizer(None)
    with pytest.raises(InputError, match="no tokenizer attached"):
        model.to_tokens("cat")


def test_unsupported_tokenizer_object():
    with pytest.raises(TypeError, match="tokenizers.Tokenizer or a transformers tokenizer"):
        make_model(tokenizer=object())


@pytest.mark.parametrize("bad", [[], [1, 2], ["ok", 3]])
def test_to_tokens_rejects_non_strings(word_model, bad):
    with pytest.raises(InputError, match="string or a non-empty list of strings"):
        word_model.to_tokens(bad)


def test_to_tokens_rejects_text_that_tokenizes_to_nothing(word_model):
    with pytest.raises(InputError, match="empty sequence"):
        word_model.to_tokens("   ")
