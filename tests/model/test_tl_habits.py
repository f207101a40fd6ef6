"""Issue 17, "TL habits": BOS and padding as in TransformerLens, strings and tensors alike, the TL names users reach for,
a key/value cache for generation.

Expected values: the unpadded single-sequence forward, a manual cross-entropy, a plain loop without the cache.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

from hooked_bilinear import HookedBilinearTransformer, InputError

from ._factories import WORDS, make_model, make_wordlevel_tokenizer, random_tokens


def special_bos_tokenizer(name="[BOS]"):
    """WordLevel over WORDS with `name` registered as a special token and no post-processor (like the zoo's)."""
    from tokenizers import AddedToken

    tok = make_wordlevel_tokenizer()
    tok.add_special_tokens([AddedToken(name, special=True)])
    return tok


def test_bos_is_detected_from_the_special_tokens_and_prepended_as_in_tl():
    model = make_model(tokenizer=special_bos_tokenizer())
    assert model.tokenizer.bos_token_id == WORDS.index("[BOS]")
    assert model.to_tokens("the cat").tolist() == [[3, 4]]  # default_prepend_bos False
    assert model.to_tokens("the cat", prepend_bos=True).tolist() == [[2, 3, 4]]
    model.cfg.default_prepend_bos = True
    assert model.to_tokens("the cat").tolist() == [[2, 3, 4]]
    assert model.to_tokens("the cat", prepend_bos=False).tolist() == [[3, 4]]
    assert model.to_str_tokens("the cat") == ["[BOS]", "the", "cat"]


def test_prepend_bos_without_a_bos_is_an_error_not_a_no_op():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"x": 0, "y": 1}, unk_token="x"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    model = make_model(tokenizer=tok)
    with pytest.raises(InputError, match="declares no BOS"):
        model.to_tokens("x y", prepend_bos=True)


@pytest.mark.parametrize("name, text", [("induction-2l", None), ("tiny-lm", "def f(x):\n    return x")])
def test_bundled_tokenizers_declare_their_bos(name, text):
    model = HookedBilinearTransformer.from_pretrained(name)
    if model.tokenizer.bos_token_id is None:
        pytest.skip(f"{name}'s tokenizer has no BOS yet (being retrained by the zoo helper)")
    text = text or model.to_string(torch.tensor([5, 6, 7]))
    with_bos = model.to_tokens(text, prepend_bos=True)[0]
    without = model.to_tokens(text, prepend_bos=False)[0]
    assert with_bos[0].item() == model.tokenizer.bos_token_id == 0
    assert torch.equal(with_bos[1:], without)


def test_tiny_lm_prepends_bos_by_default():
    """tiny-lm was trained on documents each preceded by <|endoftext|> (train/tasks/corpus.py), like GPT-2."""
    model = HookedBilinearTransformer.from_pretrained("tiny-lm")
    assert model.cfg.default_prepend_bos
    assert model.to_tokens("import os")[0, 0].item() == model.tokenizer.token_id("<|endoftext|>")


@pytest.mark.parametrize("norm_pos", [("LN", "standard"), ("RMS", "rotary")])
def test_left_padding_gives_each_row_its_unpadded_logits(norm_pos):
    norm, pos = norm_pos
    model = make_model(tokenizer=make_wordlevel_tokenizer(), normalization_type=norm, positional_embedding_type=pos)
    texts = ["the big red dog sat", "a cat"]
    left = model.to_tokens(texts, padding_side="left")
    assert left[1].tolist() == [0, 0, 0, 8, 4]  # [PAD] x3 then "a cat"
    logits = model(texts, padding_side="left")
    for row, text in enumerate(texts):
        alone = model(text)
        torch.testing.assert_close(logits[row, -alone.shape[1]:], alone[0], atol=1e-10, rtol=1e-10)
    # the same through an explicit attention_mask on the tensor
    mask = (torch.arange(5)[None, :] >= torch.tensor([[0], [3]])).long()
    torch.testing.assert_close(model(left, attention_mask=mask), logits, atol=1e-12, rtol=0)


def test_right_padding_needs_no_mask():
    model = make_model(tokenizer=make_wordlevel_tokenizer())
    texts = ["the big red dog sat", "a cat"]
    logits = model(texts)
    torch.testing.assert_close(logits[1, :2], model("a cat")[0], atol=1e-12, rtol=0)


def test_out_of_vocabulary_word_is_named():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}))  # no unknown token
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    model = make_model(tokenizer=tok)
    with pytest.raises(InputError, match=r"\['zebra'\]"):
        model.to_tokens("the zebra sat")
    with pytest.raises(InputError, match="zebra"):
        model("the zebra sat")


def test_strings_over_n_ctx_raise_like_tensors_and_to_tokens_says_when_it_cuts():
    model = make_model(tokenizer=make_wordlevel_tokenizer())
    text = " ".join(["cat"] * 25)
    with pytest.raises(InputError, match="tokenizes to 25 tokens but n_ctx is 10"):
        model(text)
    with pytest.raises(InputError, match="n_ctx is 10"):
        model(torch.full((1, 25), 4))
    with pytest.warns(UserWarning, match="cut the input from 25 to n_ctx=10"):
        assert model.to_tokens(text).shape == (1, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.to_tokens("the cat").shape == (1, 2)  # nothing cut, nothing said


def test_get_token_position_and_to_single_str_token():
    model = make_model(tokenizer=special_bos_tokenizer())
    assert model.get_token_position("cat", "the cat sat on the cat") == 1
    assert model.get_token_position("cat", "the cat sat on the cat", mode="last") == 5
    assert model.get_token_position("cat", "the cat sat", prepend_bos=True) == 2  # the BOS counts, as in TL
    assert model.get_token_position(4, torch.tensor([3, 4, 5])) == 1
    with pytest.raises(InputError, match="does not occur"):
        model.get_token_position("dog", "the cat")
    assert model.to_single_str_token(4) == "cat"
    with pytest.raises(InputError, match="d_vocab"):
        model.to_single_str_token(99)


def test_loss_fn_is_the_next_token_cross_entropy():
    model = make_model()
    tokens = random_tokens(model.cfg)
    logits = model(tokens)
    want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(model.loss_fn(logits, tokens), want)
    torch.testing.assert_close(model.loss_fn(logits, tokens), model(tokens, return_type="loss"))
    mask = torch.ones_like(tokens)
    mask[1, 3:] = 0
    per_token = model.loss_fn(logits, tokens, attention_mask=mask, per_token=True)
    assert per_token.shape == (2, tokens.shape[1] - 1)


# --------------------------------------------------------------------------- key/value cache
@pytest.mark.parametrize("pos", ["standard", "rotary", "none"])
def test_kv_cache_generation_is_identical_to_the_plain_loop(pos):
    model = make_model(positional_embedding_type=pos, n_ctx=12)
    prompt = random_tokens(model.cfg, batch=2, pos=4)
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_past_kv_cache=True)
    plain = model.generate(prompt, max_new_tokens=12, do_sample=False, use_past_kv_cache=False)
    assert torch.equal(cached, plain) and cached.shape == (2, 16)  # past n_ctx=12 the window slides


def test_kv_cache_forward_in_pieces_equals_the_full_forward():
    from hooked_bilinear.model.kv_cache import KeyValueCache

    model = make_model(positional_embedding_type="rotary")
    tokens = random_tokens(model.cfg, batch=2, pos=7)
    cache = KeyValueCache(model.cfg.n_layers)
    first = model(tokens[:, :4], past_kv_cache=cache)
    rest = model(tokens[:, 4:], past_kv_cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), model(tokens), atol=1e-10, rtol=1e-10)
    with pytest.raises(InputError, match="exceed n_ctx"):
        model(random_tokens(model.cfg, batch=2, pos=5), past_kv_cache=cache)
