"""BilinearTensor: construction, evaluation, bias parts, symmetric part (math.md §5 items 1-3)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hooked_bilinear.errors import NotBilinearError as PackageNotBilinearError
from hooked_bilinear.tensor import BilinearTensor, MaterializeTooLargeError, NotBilinearError
from ._helpers import assert_close, make_weights, own_errors, reference_mlp, rel_err


def full(w) -> BilinearTensor:
    return BilinearTensor(w.W_l, w.W_r, w.W_out, w.b_l, w.b_r, w.b_out)


# ------------------------------------------------------------------ §5.1 tensor form and biases
def test_B_xx_equals_bias_free_mlp(dtype):
    w = make_weights(dtype=dtype, bias=False)
    bt = full(w)
    x = torch.randn(5, w.d, dtype=dtype)
    assert_close(bt(x), reference_mlp(w, x), dtype)
    assert_close(torch.einsum("oij,bi,bj->bo", bt.materialize(), x, x), reference_mlp(w, x), dtype)


def test_mlp_matches_layer_with_biases(dtype):
    w = make_weights(dtype=dtype)
    x = torch.randn(3, 4, w.d, dtype=dtype)
    assert_close(full(w).mlp(x), reference_mlp(w, x), dtype)


def test_augmented_tensor_gives_mlp_with_biases(dtype):
    w = make_weights(dtype=dtype)
    bt = full(w)
    x = torch.randn(6, w.d, dtype=dtype)
    xa = torch.cat([x, torch.ones(6, 1, dtype=dtype)], dim=-1)
    aug = bt.augmented()
    assert aug.d_in == w.d + 1 and aug.d_out == w.d
    Ba = aug.materialize()
    assert_close(torch.einsum("oij,bi,bj->bo", Ba, xa, xa) + w.b_out, reference_mlp(w, x), dtype)
    # the blocks of B' are the interaction, linear and constant parts (§1.2)
    d = w.d
    assert_close(Ba[:, :d, :d], bt.interaction_part.materialize(), dtype)
    assert_close(Ba[:, :d, d] + Ba[:, d, :d], bt.linear_part, dtype)
    assert_close(Ba[:, d, d], bt.constant_part, dtype)


def test_parts_sum_to_mlp(dtype):
    w = make_weights(dtype=dtype)
    bt = full(w)
    x = torch.randn(4, w.d, dtype=dtype)
    total = bt.interaction_part(x) + x @ bt.linear_part.T + bt.constant_part + w.b_out
    assert_close(total, reference_mlp(w, x), dtype)
    # closed forms
    assert_close(bt.linear_part, ((w.W_l * w.b_r + w.W_r * w.b_l) @ w.W_out).T, dtype)
    assert_close(bt.constant_part, (w.b_l * w.b_r) @ w.W_out, dtype)


def test_no_bias_parts_are_zero():
    w = make_weights()
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    assert not bt.has_bias
    assert torch.count_nonzero(bt.linear_part) == 0 and torch.count_nonzero(bt.constant_part) == 0
    x = torch.randn(3, w.d, dtype=torch.float64)
    assert torch.equal(bt.mlp(x), bt(x))


# ------------------------------------------------------------------ §5.2 factored == materialized
def test_factored_B_xy_equals_materialized(dtype):
    w = make_weights(d=6, m=9, d_out=4, dtype=dtype)
    bt = full(w)
    x, y = torch.randn(2, 3, 6, dtype=dtype)
    B = bt.materialize()
    assert B.shape == (4, 6, 6)
    assert_close(bt(x, y), torch.einsum("oij,bi,bj->bo", B, x, y), dtype)
    ref = torch.einsum("ko,ik,jk->oij", w.W_out, w.W_l, w.W_r)
    assert_close(B, ref, dtype)


def test_materialize_chunking_is_exact():
    w = make_weights(d=5, m=8, d_out=7)
    bt = full(w)
    assert_close(bt.materialize(chunk_size=1), bt.materialize(chunk_size=100))
    assert_close(bt.materialize(sym=True, chunk_size=3), bt.materialize(sym=True))


def test_to_casts_every_weight():
    w = make_weights()
    bt32 = full(w).to(torch.float32)
    assert all(t.dtype == torch.float32 for t in (bt32.W_l, bt32.W_r, bt32.W_out, bt32.b_l, bt32.b_r, bt32.b_out))
    x = torch.randn(3, w.d, dtype=torch.float64)
    assert_close(bt32.mlp(x.float()), reference_mlp(w, x).float(), torch.float32)


def test_batching_broadcasts():
    w = make_weights()
    bt = full(w)
    x = torch.randn(2, 3, w.d, dtype=torch.float64)
    y = torch.randn(3, w.d, dtype=torch.float64)
    out = bt(x, y)
    assert out.shape == (2, 3, w.d)
    assert_close(out[1, 2], bt(x[1, 2], y[2]))


# ------------------------------------------------------------------ §5.3 symmetric part
def test_antisymmetric_part_vanishes_on_the_diagonal(dtype):
    w = make_weights(dtype=dtype)
    B = full(w).materialize()
    B_anti = 0.5 * (B - B.transpose(1, 2))
    x = torch.randn(w.d, dtype=dtype)
    val = torch.einsum("oij,i,j->o", B_anti, x, x)
    assert float(val.abs().max()) < 1e3 * torch.finfo(dtype).eps * float(B.abs().max()) * w.d**2
    assert float(B_anti.abs().max()) > 1e-2  # ...although B_anti itself is not zero


def test_ordered_cross_terms_differ_but_sum_is_symmetric(dtype):
    w = make_weights(dtype=dtype)
    bt = full(w)
    x, y = torch.randn(2, w.d, dtype=dtype)
    assert rel_err(bt(x, y), bt.sym(x, y)) > 1e-2  # ordered B(x,y) ≠ B_sym(x,y) generically
    assert_close(bt(x, y) + bt(y, x), 2 * bt.sym(x, y), dtype)
    Bs = bt.materialize(sym=True)
    assert_close(bt.sym(x, y), torch.einsum("oij,i,j->o", Bs, x, y), dtype)


def test_mlp_of_sum_expands_into_four_terms(dtype):
    w = make_weights(dtype=dtype, bias=False)
    bt = full(w)
    x, y = torch.randn(2, 4, w.d, dtype=dtype)
    assert_close(reference_mlp(w, x + y), bt(x, x) + bt(y, y) + bt(x, y) + bt(y, x), dtype)


# ------------------------------------------------------------------ construction and errors
def test_identity_W_out():
    w = make_weights(d=5, m=6)
    bt = BilinearTensor(w.W_l, w.W_r, b_l=w.b_l, b_r=w.b_r)
    x = torch.randn(5, dtype=torch.float64)
    assert bt.d_out == 6
    assert_close(bt.mlp(x), (x @ w.W_l + w.b_l) * (x @ w.W_r + w.b_r))
    assert_close(bt.materialize(), torch.einsum("ik,jk->kij", w.W_l, w.W_r))


@own_errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(W_r=torch.randn(7, 10, dtype=torch.float64)), r"W_l has shape \(7, 11\) but W_r has shape \(7, 10\)"),
        (dict(W_out=torch.randn(10, 7, dtype=torch.float64)), r"W_out has shape \(10, 7\).*11"),
        (dict(b_l=torch.randn(10, dtype=torch.float64)), r"b_l has shape \(10,\).*d_mlp=11"),
        (dict(b_out=torch.randn(6, dtype=torch.float64)), r"b_out has shape \(6,\).*d_out=7"),
        (dict(W_l=torch.randn(7, 11, 1, dtype=torch.float64)), r"W_l has shape \(7, 11, 1\) but must have 2 dims"),
    ],
)
def test_shape_errors_name_the_tensor(kwargs, match):
    w = make_weights()
    args = dict(W_l=w.W_l, W_r=w.W_r, W_out=w.W_out, b_l=w.b_l, b_r=w.b_r, b_out=w.b_out) | kwargs
    with pytest.raises(ValueError, match=match):
        BilinearTensor(**args)


@own_errors
def test_dtype_mismatch_is_refused():
    w = make_weights()
    with pytest.raises(TypeError, match="W_out is torch.float32"):
        BilinearTensor(w.W_l, w.W_r, w.W_out.float())
    bt = full(w)
    with pytest.raises(TypeError, match="x is torch.float32"):
        bt(torch.randn(w.d))
    with pytest.raises(ValueError, match=r"x has shape \(3,\) but its last dim must be d_in=7"):
        bt(torch.randn(3, dtype=torch.float64))


def test_from_layer_duck_typed_matches_layer():
    w = make_weights()
    layer = SimpleNamespace(**vars(w), cfg=SimpleNamespace(gate=None))
    bt = BilinearTensor.from_layer(layer)
    x = torch.randn(2, 5, w.d, dtype=torch.float64)
    assert_close(bt.mlp(x), reference_mlp(w, x))


def test_from_layer_without_W_out_uses_given_head():
    w = make_weights(d=6, m=8)
    head = torch.randn(8, 3, dtype=torch.float64)
    layer = SimpleNamespace(W_l=w.W_l, W_r=w.W_r)
    bt = BilinearTensor.from_layer(layer, W_out=head)
    x = torch.randn(6, dtype=torch.float64)
    assert bt.d_out == 3
    assert_close(bt.mlp(x), ((x @ w.W_l) * (x @ w.W_r)) @ head)
    with pytest.raises(ValueError, match="already has W_out"):
        BilinearTensor.from_layer(SimpleNamespace(**vars(w)), W_out=torch.randn(7, 3, dtype=torch.float64))


@pytest.mark.parametrize("gate", ["silu", "relu", "gelu"])
def test_gated_layer_is_refused(gate):
    w = make_weights()
    layer = SimpleNamespace(**vars(w), cfg=SimpleNamespace(gate=gate))
    with pytest.raises(NotBilinearError, match=f"gate='{gate}'.*not bilinear"):
        BilinearTensor.from_layer(layer)
    assert issubclass(NotBilinearError, ValueError) and NotBilinearError is PackageNotBilinearError


def test_gate_function_attribute_is_refused():
    w = make_weights()
    with pytest.raises(NotBilinearError, match="gate='silu'"):
        BilinearTensor.from_layer(SimpleNamespace(**vars(w), gate=F.silu))
    assert BilinearTensor.from_layer(SimpleNamespace(**vars(w), gate=None)).d_mlp == 11


def test_layer_without_weights_is_refused():
    with pytest.raises(TypeError, match="has no W_l, W_r"):
        BilinearTensor.from_layer(SimpleNamespace(W_in=torch.zeros(2, 2)))


def test_materialize_guard_names_bytes_and_limit():
    w = make_weights(d=7, m=11)
    bt = full(w)
    n_bytes = 7 * 7 * 7 * 8
    with pytest.raises(MaterializeTooLargeError, match=f"needs {n_bytes:,} bytes, above max_bytes=1,000") as e:
        bt.materialize(max_bytes=1000)
    assert e.value.n_bytes == n_bytes and e.value.max_bytes == 1000
    assert bt.materialize(max_bytes=n_bytes).shape == (7, 7, 7)  # raising the limit allows it


@pytest.mark.parametrize("gate", [None, "silu"])
def test_real_bilinear_mlp_component(gate):
    """Parity with the core model's BilinearMLP layer (one component, random weights, no model)."""
    from hooked_bilinear import HookedBilinearConfig
    from hooked_bilinear.components.bilinear_mlp import BilinearMLP

    cfg = HookedBilinearConfig(n_layers=1, d_model=7, n_heads=1, d_head=7, d_mlp=11, d_vocab=5, n_ctx=4,
                               mlp_bias=True, dtype=torch.float64, gate=gate)
    layer = BilinearMLP(cfg)
    w = make_weights()
    with torch.no_grad():
        for name, t in vars(w).items():
            getattr(layer, name).copy_(t)
    if gate is not None:
        with pytest.raises(NotBilinearError, match=f"gate='{gate}'"):
            BilinearTensor.from_layer(layer)
        return
    bt = BilinearTensor.from_layer(layer)
    x = torch.randn(2, 3, w.d, dtype=torch.float64)
    with torch.no_grad():
        assert_close(bt.mlp(x), layer(x))
        assert_close(bt.mlp(x), reference_mlp(w, x))
