"""Reliability: every bad input raises a clear exception whose message names the problem, and leaves
the model exactly as it was (same state dict, no hooks left behind, same outputs afterwards)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_bilinear import (
    CheckpointError,
    ConfigError,
    HookedBilinearConfig,
    HookedBilinearMLP,
    HookedBilinearMLPConfig,
    HookedBilinearTransformer,
    HookNameError,
    HookReturnError,
    InputError,
    NotBilinearError,
)

from ._factories import SMALL, assert_unchanged, hooked_points, make_model, make_wordlevel_tokenizer, snapshot

# The model under test: n_layers=2, d_model=16, n_ctx=10, d_vocab=13, float64, no tokenizer.
OK = torch.tensor([[1, 2, 3]])


def resid(*shape, dtype=torch.float64):
    return torch.zeros(*shape, dtype=dtype)


def noop(tensor, hook):
    return None


# (id, call on the model, exception type, substrings the message must contain)
MODEL_CASES = [
    # token ids
    ("id-too-large", lambda m: m(torch.tensor([[1, 13]])), InputError, ["token id 13", "[0, d_vocab=13)"]),
    ("id-way-too-large", lambda m: m(torch.tensor([[10**9]])), InputError, ["token id 1000000000", "d_vocab=13"]),
    ("id-negative", lambda m: m(torch.tensor([[4, -1]])), InputError, ["token id -1", "out of range"]),
    ("float32-tokens", lambda m: m(torch.tensor([[1.0, 2.0]])), InputError, ["integer dtype", "torch.float32"]),
    ("float64-tokens", lambda m: m(torch.tensor([[1.0]], dtype=torch.float64)), InputError, ["integer dtype", "torch.float64"]),
    ("bool-tokens", lambda m: m(torch.tensor([[True, False]])), InputError, ["integer dtype", "torch.bool"]),
    ("complex-tokens", lambda m: m(torch.tensor([[1 + 0j]])), InputError, ["integer dtype", "complex64"]),
    ("empty-sequence", lambda m: m(torch.zeros(1, 0, dtype=torch.long)), InputError, ["empty", "(1, 0)"]),
    ("empty-batch", lambda m: m(torch.zeros(0, 3, dtype=torch.long)), InputError, ["empty", "(0, 3)"]),
    ("empty-1d", lambda m: m(torch.zeros(0, dtype=torch.long)), InputError, ["empty", "(1, 0)"]),
    ("longer-than-n_ctx", lambda m: m(torch.zeros(2, 11, dtype=torch.long)), InputError, ["(2, 11)", "n_ctx is 10"]),
    ("rank-3-tokens", lambda m: m(torch.zeros(1, 2, 3, dtype=torch.long)), InputError, ["[batch, pos] or [pos]", "(1, 2, 3)"]),
    ("rank-0-tokens", lambda m: m(torch.tensor(3)), InputError, ["[batch, pos] or [pos]", "shape ()"]),
    ("none-input", lambda m: m(None), InputError, ["torch.Tensor", "NoneType"]),
    ("numpy-input", lambda m: m(np.array([[1, 2]])), InputError, ["torch.Tensor", "ndarray"]),
    ("string-without-tokenizer", lambda m: m("the cat"), InputError, ["no tokenizer attached", "set_tokenizer"]),
    ("list-without-tokenizer", lambda m: m(["the cat"]), InputError, ["no tokenizer attached"]),
    # residual-stream input
    ("resid-float32", lambda m: m(resid(1, 3, 16, dtype=torch.float32), start_at_layer=0), InputError,
     ["dtype torch.float32", "computes in torch.float64"]),
    ("resid-int", lambda m: m(torch.zeros(1, 3, 16, dtype=torch.long), start_at_layer=1), InputError,
     ["dtype torch.int64"]),
    ("resid-wrong-d_model", lambda m: m(resid(1, 3, 15), start_at_layer=0), InputError, ["d_model=16", "(1, 3, 15)"]),
    ("resid-rank-2", lambda m: m(resid(3, 16), start_at_layer=1), InputError, ["[batch, pos, d_model=16]", "(3, 16)"]),
    ("resid-not-a-tensor", lambda m: m([[0.0] * 16], start_at_layer=1), InputError, ["[batch, pos, d_model=16]", "list"]),
    ("start-too-large", lambda m: m(resid(1, 3, 16), start_at_layer=3), InputError, ["start_at_layer", "[-2, 2]", "got 3"]),
    ("start-too-small", lambda m: m(resid(1, 3, 16), start_at_layer=-3), InputError, ["start_at_layer", "got -3"]),
    ("start-not-int", lambda m: m(resid(1, 3, 16), start_at_layer="1"), InputError, ["start_at_layer", "got '1'"]),
    ("stop-too-large", lambda m: m(OK, stop_at_layer=7), InputError, ["stop_at_layer", "[-2, 2]", "got 7"]),
    ("loss-without-tokens", lambda m: m(resid(1, 3, 16), start_at_layer=1, return_type="loss"), InputError,
     ["needs token ids", "tokens="]),
    ("loss-bad-tokens", lambda m: m(resid(1, 3, 16), start_at_layer=1, tokens=torch.tensor([[1, 99, 2]]),
                                     return_type="loss"), InputError, ["token id 99"]),
    ("loss-one-position", lambda m: m(torch.tensor([[4]]), return_type="loss"), InputError, ["at least 2 positions"]),
    # return types
    ("return-type-typo", lambda m: m(OK, return_type="logit"), InputError, ["return_type", "'logit'", "'logits'"]),
    ("return-type-probs", lambda m: m(OK, return_type="probs"), InputError, ["return_type", "'probs'"]),
    # hooks
    ("hook-name-typo", lambda m: m.run_with_hooks(OK, fwd_hooks=[("blocks.0.hook_resid_prex", noop)]), HookNameError,
     ["'blocks.0.hook_resid_prex'", "did you mean", "'blocks.0.hook_resid_pre'"]),
    ("hook-layer-out-of-range", lambda m: m.run_with_hooks(OK, fwd_hooks=[("blocks.7.hook_resid_pre", noop)]),
     HookNameError, ["'blocks.7.hook_resid_pre'", "did you mean"]),
    ("hook-bwd-name", lambda m: m.run_with_hooks(OK, bwd_hooks=[("hook_embeds", noop)]), HookNameError,
     ["'hook_embeds'", "'hook_embed'"]),
    ("hook-not-a-hook-point", lambda m: m.add_hook("blocks.0.attn", noop), HookNameError, ["'blocks.0.attn'"]),
    ("hook-rot-on-standard", lambda m: m.add_hook("blocks.0.attn.hook_rot_q", noop), HookNameError,
     ["'blocks.0.attn.hook_rot_q'"]),
    ("cache-filter-typo", lambda m: m.run_with_cache(OK, names_filter="blocks.0.mlp.hook_pots"), HookNameError,
     ["'blocks.0.mlp.hook_pots'", "'blocks.0.mlp.hook_post'"]),
    ("cache-filter-list-typo", lambda m: m.run_with_cache(OK, names_filter=["hook_embed", "ln_final.hook_scal"]),
     HookNameError, ["'ln_final.hook_scal'"]),
    ("hook-wrong-shape", lambda m: m.run_with_hooks(OK, fwd_hooks=[("blocks.1.mlp.hook_post", lambda t, hook: t[..., :3])]),
     HookReturnError, ["'blocks.1.mlp.hook_post'", "(1, 3, 3)", "expected shape (1, 3, 24)"]),
    ("hook-wrong-dtype", lambda m: m.run_with_hooks(OK, fwd_hooks=[("hook_embed", lambda t, hook: t.half())]),
     HookReturnError, ["'hook_embed'", "torch.float16", "torch.float64"]),
    ("hook-not-a-tensor", lambda m: m.run_with_hooks(OK, fwd_hooks=[("hook_embed", lambda t, hook: "x")]),
     HookReturnError, ["'hook_embed'", "returned str"]),
    # cache options
    ("remove-batch-dim-batch-2", lambda m: m.run_with_cache(torch.tensor([[1, 2], [3, 4]]), remove_batch_dim=True),
     InputError, ["batch size 1", "(2, 2)"]),
    ("incl-bwd-logits", lambda m: m.run_with_cache(OK, incl_bwd=True), InputError, ["scalar", "return_type='loss'"]),
    # generation
    ("generate-negative-length", lambda m: m.generate(OK, max_new_tokens=-1), InputError, ["max_new_tokens", "-1"]),
    ("generate-negative-temperature", lambda m: m.generate(OK, temperature=-1.0), InputError, ["temperature", "-1.0"]),
    ("generate-top-k-zero", lambda m: m.generate(OK, top_k=0), InputError, ["top_k", "d_vocab=13", "got 0"]),
    ("generate-top-k-too-big", lambda m: m.generate(OK, top_k=99), InputError, ["top_k", "got 99"]),
    ("generate-bad-prompt", lambda m: m.generate(torch.tensor([[1, 13]]), max_new_tokens=2), InputError, ["token id 13"]),
    # tokenization without a tokenizer
    ("to-tokens-without-tokenizer", lambda m: m.to_tokens("hi"), InputError, ["no tokenizer attached"]),
    ("to-string-without-tokenizer", lambda m: m.to_string(OK[0]), InputError, ["no tokenizer attached"]),
    # weights and processing refused
    ("bilinear-layer-out-of-range", lambda m: m.bilinear(2), IndexError, ["layer 2", "n_layers=2"]),
    ("accumulated-bias-mlp-input-final", lambda m: m.accumulated_bias(2, mlp_input=True), ValueError, ["n_layers=2"]),
]

TOKENIZER_CASES = [
    ("single-token-multi", lambda m: m.to_single_token("the cat"), InputError, ["'the cat' is 2 tokens"]),
    ("single-token-empty", lambda m: m.to_single_token(""), InputError, ["empty sequence"]),
    ("to-tokens-not-strings", lambda m: m.to_tokens([1, 2]), InputError, ["string or a non-empty list of strings"]),
    ("to-tokens-empty-list", lambda m: m.to_tokens([]), InputError, ["non-empty list"]),
    ("to-str-tokens-batch", lambda m: m.to_str_tokens(torch.tensor([[1, 2], [3, 4]])), InputError, ["single sequence"]),
    ("string-too-long-no-truncate", lambda m: m(m.to_tokens(" ".join(["cat"] * 12), truncate=False)), InputError,
     ["(1, 12)", "n_ctx is 10"]),
    ("set-tokenizer-too-big", lambda m: m.set_tokenizer(make_wordlevel_tokenizer_big()), InputError,
     ["tokenizer has 20 tokens", "d_vocab is 13"]),
]


def make_wordlevel_tokenizer_big():
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({f"w{i}": i for i in range(20)}, unk_token="w0"))


def check_case(model, call, exc, fragments):
    before = snapshot(model)
    reference = model(OK)
    with pytest.raises(exc) as info:
        call(model)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert_unchanged(model, before)
    assert hooked_points(model) == []
    assert model.context_level == 0
    assert torch.equal(model(OK), reference)


@pytest.mark.parametrize("call, exc, fragments", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_bad_model_input(call, exc, fragments):
    check_case(make_model(), call, exc, fragments)


@pytest.mark.parametrize("call, exc, fragments", [c[1:] for c in TOKENIZER_CASES], ids=[c[0] for c in TOKENIZER_CASES])
def test_bad_tokenizer_input(call, exc, fragments):
    model = make_model(tokenizer=make_wordlevel_tokenizer())
    check_case(model, call, exc, fragments)
    assert model.tokenizer is not None and model.to_single_token("cat") == 4  # tokenizer still attached


def test_refused_processing_leaves_the_model_unchanged():
    check_case(make_model(normalization_type="RMS"), lambda m: m.center_writing_weights(), ConfigError,
               ["center_writing_weights", "normalization_type='RMS'"])


def test_attn_only_bilinear_refused():
    check_case(make_model(attn_only=True), lambda m: m.bilinear(0), NotBilinearError, ["attention-only"])


@pytest.mark.parametrize("name, fragments", [("W_l", ["attn_only", "'W_l'"]), ("b_out", ["attn_only", "'b_out'"])])
def test_missing_weight_accessor_says_why(name, fragments):
    check_case(make_model(attn_only=True), lambda m: getattr(m, name), AttributeError, fragments)


# ------------------------------------------------------------------ invalid configs, one field at a time

CONFIG_CASES = [
    ("d_model", 0, ["d_model", ">= 1", "got 0"]),
    ("d_model", 16.0, ["d_model", "got 16.0"]),
    ("d_head", -4, ["d_head", "got -4"]),
    ("n_layers", -1, ["n_layers", ">= 0", "got -1"]),
    ("n_ctx", 0, ["n_ctx", "got 0"]),
    ("n_heads", 0, ["n_heads", "positive", "got 0"]),
    ("n_heads", 2.5, ["n_heads", "got 2.5"]),
    ("d_mlp", 0, ["d_mlp", "positive", "got 0"]),
    ("d_mlp", 3.5, ["d_mlp", "got 3.5"]),
    ("d_vocab", 0, ["d_vocab", "positive", "got 0"]),
    ("d_vocab", None, ["d_vocab", "got None"]),
    ("d_vocab", 12.5, ["d_vocab", "got 12.5"]),
    ("normalization_type", "BatchNorm", ["normalization_type", "'RMSPre'", "got 'BatchNorm'"]),
    ("positional_embedding_type", "learned", ["positional_embedding_type", "'rotary'", "got 'learned'"]),
    ("gate", "tanh", ["gate", "'silu'", "got 'tanh'"]),
    ("init_scheme", "he", ["init_scheme", "'xavier_normal'", "got 'he'"]),
    ("dtype", "float17", ["unknown dtype 'float17'"]),
    ("dtype", torch.int64, ["dtype", "floating-point", "torch.int64"]),
    ("eps", -1e-5, ["eps", ">= 0", "got -1e-05"]),
    ("eps", float("nan"), ["eps", "got nan"]),
    ("attn_scale", 0.0, ["attn_scale", "> 0", "got 0.0"]),
    ("attn_scale", float("inf"), ["attn_scale", "got inf"]),
    ("init_range", -0.1, ["init_range", ">= 0", "got -0.1"]),
    ("n_key_value_heads", 1, ["n_key_value_heads=1", "grouped-query", "n_heads=2"]),
    ("num_experts", 4, ["num_experts=4", "not supported"]),
]
ROTARY_CASES = [
    ("rotary_dim", 3, ["rotary_dim", "even", "d_head=8", "got 3"]),
    ("rotary_dim", 10, ["rotary_dim", "got 10"]),
    ("rotary_dim", 0, ["rotary_dim", "got 0"]),
    ("rotary_base", 0.0, ["rotary_base", "> 0", "got 0.0"]),
]


@pytest.mark.parametrize("field, value, fragments", CONFIG_CASES, ids=[f"{f}={v!r}" for f, v, _ in CONFIG_CASES])
def test_invalid_config_field(field, value, fragments):
    with pytest.raises(ConfigError) as info:
        HookedBilinearConfig(**{**SMALL, field: value})
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("field, value, fragments", ROTARY_CASES, ids=[f"{f}={v!r}" for f, v, _ in ROTARY_CASES])
def test_invalid_rotary_config_field(field, value, fragments):
    with pytest.raises(ConfigError) as info:
        HookedBilinearConfig(**{**SMALL, "positional_embedding_type": "rotary", field: value})
    for fragment in fragments:
        assert fragment in str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(InputError, ValueError) and issubclass(HookReturnError, InputError)
    assert issubclass(HookNameError, KeyError) and issubclass(CheckpointError, ValueError)


def test_invalid_model_config_dict():
    with pytest.raises(ConfigError, match="unknown config keys"):
        HookedBilinearConfig.from_dict({**SMALL, "d_ff": 64})
    with pytest.raises(TypeError):
        HookedBilinearTransformer({**SMALL, "d_ff": 64})


IMAGE_CONFIG_CASES = [
    (dict(d_input=0), ["d_input", "got 0"]),
    (dict(d_hidden=-1), ["d_hidden", "got -1"]),
    (dict(n_classes=0), ["n_classes", "got 0"]),
    (dict(gate="swish"), ["gate", "got 'swish'"]),
    (dict(input_shape=(7, 7)), ["input_shape (7, 7)", "d_input=64"]),
    (dict(dtype="float17"), ["unknown dtype"]),
]


@pytest.mark.parametrize("overrides, fragments", IMAGE_CONFIG_CASES, ids=[str(o) for o, _ in IMAGE_CONFIG_CASES])
def test_invalid_image_model_config(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        HookedBilinearMLPConfig(**{"d_input": 64, "d_hidden": 8, **overrides})
    for fragment in fragments:
        assert fragment in str(info.value)


IMAGE_CASES = [
    ("int-images", lambda m: m(torch.ones(2, 64, dtype=torch.long)), InputError, ["floating-point", "torch.int64"]),
    ("wrong-size", lambda m: m(torch.rand(2, 63)), InputError, ["d_input=64", "(2, 63)"]),
    ("not-a-tensor", lambda m: m([[0.0] * 64]), InputError, ["floating-point", "list"]),
    ("loss-without-labels", lambda m: m(torch.rand(2, 64), return_type="loss"), InputError, ["needs labels"]),
    ("bad-return-type", lambda m: m(torch.rand(2, 64), return_type="probs"), InputError, ["return_type", "'probs'"]),
    ("hook-typo", lambda m: m.run_with_hooks(torch.rand(2, 64), fwd_hooks=[("hook_logit", noop)]), KeyError,
     ["hook_logit"]),
    ("layer-out-of-range", lambda m: m.bilinear(3), IndexError, ["layer 3", "n_layers=1"]),
]


@pytest.mark.parametrize("call, exc, fragments", [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES])
def test_bad_image_model_input(call, exc, fragments):
    model = HookedBilinearMLP(HookedBilinearMLPConfig(d_input=64, d_hidden=8, seed=0))
    before = snapshot(model)
    images = torch.rand(3, 64, generator=torch.Generator().manual_seed(0))
    reference = model(images)
    with pytest.raises(exc) as info:
        call(model)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert_unchanged(model, before)
    assert hooked_points(model) == []
    assert torch.equal(model(images), reference)


@pytest.mark.parametrize("name", ["no-such-model-xyz", "someone/not-a-bilinear-model"])
def test_unknown_model_names(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        HookedBilinearTransformer.from_pretrained(name)
    assert name in str(info.value)


def test_folder_that_is_not_a_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError):
        HookedBilinearTransformer.from_pretrained(tmp_path)
