"""Autoregressive generation: greedy, temperature, top-k, seeded sampling, EOS, string and tensor input."""

import pytest
import torch

from hooked_bilinear import InputError

from ._factories import make_model, make_wordlevel_tokenizer, random_tokens


@pytest.fixture
def lm():
    return make_model(n_ctx=12)


def greedy_reference(model, tokens, n):
    for _ in range(n):
        nxt = model(tokens[:, -model.cfg.n_ctx:])[:, -1].argmax(-1)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
    return tokens


def test_greedy_matches_a_manual_argmax_loop(lm):
    prompt = random_tokens(lm.cfg, batch=2, pos=3)
    out = lm.generate(prompt, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, 8) and torch.equal(out[:, :3], prompt)
    assert torch.equal(out, greedy_reference(lm, prompt, 5))


def test_greedy_is_deterministic_and_temperature_zero_is_greedy(lm):
    prompt = random_tokens(lm.cfg, batch=1, pos=2)
    a = lm.generate(prompt, max_new_tokens=6, do_sample=False)
    b = lm.generate(prompt, max_new_tokens=6, do_sample=False)
    c = lm.generate(prompt, max_new_tokens=6, temperature=0.0)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_generation_past_n_ctx_uses_a_sliding_window(lm):
    prompt = random_tokens(lm.cfg, batch=1, pos=10)
    out = lm.generate(prompt, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 16)
    assert torch.equal(out, greedy_reference(lm, prompt, 6))


def test_one_dimensional_prompt(lm):
    prompt = random_tokens(lm.cfg, batch=1, pos=3)
    assert torch.equal(lm.generate(prompt[0], max_new_tokens=2, do_sample=False),
                       lm.generate(prompt, max_new_tokens=2, do_sample=False))


def test_seeded_sampling_is_reproducible(lm):
    prompt = random_tokens(lm.cfg, batch=3, pos=2)

    def sample(seed):
        gen = torch.Generator().manual_seed(seed)
        return lm.generate(prompt, max_new_tokens=8, temperature=1.5, top_k=4, generator=gen)

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))


def test_top_k_samples_only_among_the_k_most_likely(lm):
    prompt = random_tokens(lm.cfg, batch=4, pos=2)
    gen = torch.Generator().manual_seed(0)
    out = lm.generate(prompt, max_new_tokens=6, temperature=2.0, top_k=3, generator=gen)
    for step in range(2, out.shape[1]):
        logits = lm(out[:, :step])[:, -1]
        allowed = logits.topk(3, dim=-1).indices
        assert (allowed == out[:, step:step + 1]).any(-1).all()


def test_top_k_one_is_greedy(lm):
    prompt = random_tokens(lm.cfg, batch=2, pos=2)
    gen = torch.Generator().manual_seed(0)
    sampled = lm.generate(prompt, max_new_tokens=5, temperature=0.7, top_k=1, generator=gen)
    assert torch.equal(sampled, lm.generate(prompt, max_new_tokens=5, do_sample=False))


def test_low_temperature_concentrates_on_the_argmax(lm):
    prompt = random_tokens(lm.cfg, batch=8, pos=3)
    gen = torch.Generator().manual_seed(0)
    cold = lm.generate(prompt, max_new_tokens=1, temperature=1e-4, generator=gen)
    assert torch.equal(cold, lm.generate(prompt, max_new_tokens=1, do_sample=False))


def test_string_in_string_out():
    model = make_model(tokenizer=make_wordlevel_tokenizer())
    text = model.generate("the cat", max_new_tokens=3, do_sample=False, stop_at_eos=False)
    assert isinstance(text, str) and text.startswith("the cat")
    tokens = model.to_tokens("the cat")
    assert text == model.to_string(greedy_reference(model, tokens, 3)[0])


def test_generation_stops_at_eos():
    model = make_model(tokenizer=make_wordlevel_tokenizer(), unembed_bias=True)
    eos = model.tokenizer.eos_token_id
    assert eos == 1
    with torch.no_grad():
        model.unembed.b_U[eos] = 1e4  # EOS always wins
    out = model.generate(torch.tensor([[3, 4], [5, 6]]), max_new_tokens=5, do_sample=False)
    assert out.tolist() == [[3, 4, eos], [5, 6, eos]]
    longer = model.generate(torch.tensor([[3, 4]]), max_new_tokens=3, do_sample=False, stop_at_eos=False)
    assert longer.tolist() == [[3, 4, eos, eos, eos]]


def test_finished_rows_keep_emitting_eos(monkeypatch):
    model = make_model(tokenizer=make_wordlevel_tokenizer())
    eos = model.tokenizer.eos_token_id
    unembed = model.unembed.forward

    def forced(x):  # row 0 says EOS at once, row 1 never does
        logits = unembed(x).clone()
        logits[0, :, eos] = 1e4
        logits[1, :, eos] = -1e4
        return logits

    monkeypatch.setattr(model.unembed, "forward", forced)
    out = model.generate(torch.tensor([[3, 4], [5, 6]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 5)
    assert out[0, 2:].tolist() == [eos, eos, eos] and eos not in out[1, 2:].tolist()


def test_zero_new_tokens_returns_the_prompt(lm):
    prompt = random_tokens(lm.cfg, batch=2, pos=3)
    assert torch.equal(lm.generate(prompt, max_new_tokens=0), prompt)


def test_generate_restores_training_mode_and_does_not_build_a_graph(lm):
    lm.train()
    out = lm.generate(random_tokens(lm.cfg, batch=1, pos=2), max_new_tokens=2)
    assert lm.training and not out.requires_grad
    lm.eval()
    lm.generate(random_tokens(lm.cfg, batch=1, pos=2), max_new_tokens=1)
    assert not lm.training


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(max_new_tokens=-1), "max_new_tokens must be >= 0, got -1"),
        (dict(temperature=-0.5), "temperature must be >= 0, got -0.5"),
        (dict(top_k=0), "top_k must be in [1, d_vocab=13], got 0"),
        (dict(top_k=14), "top_k must be in [1, d_vocab=13], got 14"),
    ],
)
def test_bad_generation_arguments(lm, kwargs, fragment):
    with pytest.raises(InputError) as info:
        lm.generate(random_tokens(lm.cfg, batch=1, pos=2), **kwargs)
    assert fragment in str(info.value)


def test_bad_prompt_tokens_are_rejected(lm):
    with pytest.raises(InputError, match="out of range"):
        lm.generate(torch.tensor([[1, 99]]), max_new_tokens=1)
    with pytest.raises(InputError, match="integer dtype"):
        lm.generate(torch.tensor([[1.0, 2.0]]), max_new_tokens=1)
    with pytest.raises(InputError, match="no tokenizer attached"):
        lm.generate("the cat", max_new_tokens=1)
