"""Round trips through our format, the fast (no random init) build path, options, and the registry."""

import pytest
import torch

from hooked_bilinear import CheckpointError, HookedBilinearConfig, HookedBilinearTransformer
from hooked_bilinear.loading import list_pretrained, load_pretrained
from hooked_bilinear.model import init as init_module

from ._checkpoints import put_in_hub_cache, write_2024_06, write_2024_10

TOKENS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])


@pytest.mark.parametrize("writer", [write_2024_10, write_2024_06], ids=["2024-10", "2024-06"])
def test_public_to_native_round_trip_is_bit_exact(writer, tmp_path):
    model = load_pretrained(writer(tmp_path / "c", **({"bias": True} if writer is write_2024_10 else {})),
                            tokenizer=False)
    model.save_pretrained(tmp_path / "native")
    again = load_pretrained(tmp_path / "native")
    assert again.cfg.to_dict() == model.cfg.to_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert torch.equal(model(TOKENS), again(TOKENS))


def test_loading_never_runs_random_init(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("random initialisation ran while loading a checkpoint")

    monkeypatch.setattr(init_module, "init_weights", forbidden)
    monkeypatch.setattr("hooked_bilinear.model.hooked_bilinear_transformer.init_weights", forbidden)
    model = load_pretrained(write_2024_10(tmp_path / "c"), tokenizer=False)
    model.save_pretrained(tmp_path / "native")
    again = load_pretrained(tmp_path / "native")
    assert not any(t.is_meta for t in list(again.state_dict().values()) + list(again.buffers()))
    assert again.blocks[0].attn.mask.shape == (12, 12) and again.blocks[0].attn.rotary_cos.shape == (12, 8)


def test_buffers_match_a_freshly_built_model(tmp_path):
    model = load_pretrained(write_2024_10(tmp_path / "c"), tokenizer=False)
    fresh = HookedBilinearTransformer(HookedBilinearConfig(**{**model.cfg.to_dict(), "seed": 0}))
    for name, buffer in fresh.named_buffers():
        assert torch.equal(buffer, dict(model.named_buffers())[name]), name


def test_float64_and_requires_grad(tmp_path):
    model = load_pretrained(write_2024_10(tmp_path / "c"), tokenizer=False, dtype="float64")
    assert model.W_Q.dtype == torch.float64 and model(TOKENS).dtype == torch.float64
    assert model.blocks[0].attn.W_Q.requires_grad and not model.blocks[0].attn.b_Q.requires_grad
    assert not model.unembed.b_U.requires_grad  # no unembedding bias in the public models


def test_loaded_model_trains(tmp_path):
    model = load_pretrained(write_2024_10(tmp_path / "c"), tokenizer=False)
    loss = model(TOKENS, return_type="loss")
    loss.backward()
    assert model.blocks[0].mlp.W_l.grad is not None and torch.isfinite(loss)


def test_transformer_from_pretrained_uses_the_hub_path(tmp_path, cache_dir):
    put_in_hub_cache(cache_dir, "tdooms/ts-medium", write_2024_10(tmp_path / "c", scale_attn=False))
    model = HookedBilinearTransformer.from_pretrained("tdooms/ts-medium", cache_dir=cache_dir, tokenizer=False)
    assert model.cfg.model_name == "tdooms/ts-medium"


def test_revision_must_be_cached_offline(tmp_path, cache_dir):
    put_in_hub_cache(cache_dir, "tdooms/ts-medium", write_2024_10(tmp_path / "c"))
    with pytest.raises(CheckpointError, match=r"\(revision v2\) is not in"):
        load_pretrained("tdooms/ts-medium", cache_dir=cache_dir, revision="v2")


def test_scale_attn_does_not_apply_to_our_format(tmp_path):
    load_pretrained(write_2024_10(tmp_path / "c"), tokenizer=False).save_pretrained(tmp_path / "native")
    from hooked_bilinear.loading.hub import load_public

    with pytest.raises(CheckpointError, match="scale_attn does not apply"):
        load_public(tmp_path / "native", scale_attn=True)


def test_list_pretrained():
    table = list_pretrained()
    assert {"tdooms/ts-medium", "tdooms/fw-medium", "tdooms/ts-medium-swiglu", "tdooms/mnist"} <= set(table["id"])
    row = table.set_index("id").loc["tdooms/fw-medium"]
    assert (row.n_layers, row.d_model, row.d_mlp, row.n_heads, row.n_ctx) == (16, 1024, 4096, 16, 512)
    assert 330e6 < row.n_params < 340e6  # "~335M params" in the spec
    assert list_pretrained(as_frame=False)[0]["id"] == "tdooms/ts-medium"


def test_loaded_models_are_in_eval_mode(tmp_path):
    """TL's patching and logit-lens tools expect an analysis model in eval mode."""
    from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer, load_pretrained

    cfg = HookedBilinearConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=7, n_ctx=4, seed=0)
    HookedBilinearTransformer(cfg).save_pretrained(tmp_path)
    assert load_pretrained(tmp_path).training is False
    assert HookedBilinearTransformer.from_pretrained(str(tmp_path)).training is False
