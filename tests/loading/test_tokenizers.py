"""Tokenizers found through the HF cache (offline) and attached to the loaded model."""

import warnings

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.loading.tokenizers import load_tokenizer

from ._checkpoints import put_in_hub_cache, write_2024_06, write_2024_10

WORDS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "once", "upon", "a", "time", "there", "was", "##s", "cat"]


def _wordpiece(tmp_path):
    """A tiny lowercase WordPiece tokenizer whose post-processor prepends [BOS], like ts-tokenizer-4096."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_tokenizer_from_cache_is_attached(tmp_path, cache_dir):
    put_in_hub_cache(cache_dir, "tdooms/ts-tokenizer-4096", _wordpiece(tmp_path))
    put_in_hub_cache(cache_dir, "tdooms/ts-medium", write_2024_10(tmp_path / "c"))
    model = load_pretrained("tdooms/ts-medium", cache_dir=cache_dir)
    assert model.tokenizer is not None and model.cfg.tokenizer_name == "ts-4096"
    tokens = model.to_tokens("Once upon a time")
    assert tokens.tolist() == [[2, 4, 5, 6, 7]]  # [BOS] prepended, lowercased
    batch = model.to_tokens(["Once upon a time", "a cat"])
    assert batch[1].tolist() == [2, 6, 11, 3, 3]  # right-padded with [EOS], the models' pad token
    assert model("once upon a time").shape == (1, 5, model.cfg.d_vocab)
    assert model.to_str_tokens("a cat") == ["[BOS]", "a", "cat"]


def test_missing_tokenizer_warns_and_loads_without(tmp_path, cache_dir):
    put_in_hub_cache(cache_dir, "tdooms/ts-medium", write_2024_10(tmp_path / "c"))
    with pytest.warns(UserWarning, match=r"without a tokenizer .*tdooms/ts-tokenizer-4096: tokenizer.json is not in"):
        model = load_pretrained("tdooms/ts-medium", cache_dir=cache_dir)
    assert model.tokenizer is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_pretrained("tdooms/ts-medium", cache_dir=cache_dir, tokenizer=False).tokenizer is None


def test_older_models_find_the_uncased_tinystories_tokenizer(tmp_path, cache_dir):
    put_in_hub_cache(cache_dir, "tdooms/TinyStories-40-uncased", _wordpiece(tmp_path))
    put_in_hub_cache(cache_dir, "tdooms/TinyStories-2-16", write_2024_06(tmp_path / "c"))
    model = load_pretrained("tdooms/TinyStories-2-16", cache_dir=cache_dir)
    assert model.to_tokens("there was").tolist() == [[2, 8, 9]]


def test_tokenizer_next_to_a_local_checkpoint_is_used(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    (folder / "tokenizer.json").write_bytes((_wordpiece(tmp_path) / "tokenizer.json").read_bytes())
    model = load_pretrained(folder)
    assert model.to_tokens("a cat").tolist() == [[2, 6, 11]]


def test_tokenizer_survives_a_round_trip(tmp_path, cache_dir):
    put_in_hub_cache(cache_dir, "tdooms/ts-tokenizer-4096", _wordpiece(tmp_path))
    put_in_hub_cache(cache_dir, "tdooms/ts-medium", write_2024_10(tmp_path / "c"))
    model = load_pretrained("tdooms/ts-medium", cache_dir=cache_dir)
    model.save_pretrained(tmp_path / "native")
    again = load_pretrained(tmp_path / "native")
    assert torch.equal(again.to_tokens("once upon a time"), model.to_tokens("once upon a time"))


def test_unknown_tokenizer_key():
    with pytest.raises(Exception, match="unknown tokenizer key 'klingon'"):
        load_tokenizer("klingon")
