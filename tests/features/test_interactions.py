"""Weight-only feature circuits against the dense D Q_u Dᵀ, and Pearce §5's statistic against a brute force."""

import numpy as np
import pytest
import torch

from hooked_bilinear import InputError
from hooked_bilinear.features import SAE, SAEConfig
from hooked_bilinear.features.interactions import (dense_feature_matrix, feature_eig, feature_interactions,
                                                   top_pairs)
from hooked_bilinear.features.lowrank import low_rank_fraction, low_rank_statistic
from hooked_bilinear.tensor import BilinearTensor

G = torch.Generator().manual_seed(0)
d, m, n = 6, 10, 15
B = BilinearTensor(*(torch.randn(s, generator=G, dtype=torch.float64) for s in ((d, m), (d, m), (m, d))))
D = torch.randn(n, d, generator=G, dtype=torch.float64)
u = torch.randn(d, generator=G, dtype=torch.float64)


def _dense(u):
    Bt = torch.einsum("ko,ik,jk->oij", B.W_out, B.W_l, B.W_r)
    Bs = (Bt + Bt.transpose(1, 2)) / 2
    return D @ torch.einsum("o,oij->ij", u, Bs) @ D.T  # from the materialised tensor


def test_feature_matrix_and_its_eigenbasis():
    M = _dense(u)
    torch.testing.assert_close(dense_feature_matrix(B, D, u), M)
    e = feature_eig(B, D, u)
    torch.testing.assert_close(e.vectors @ torch.diag(e.values) @ e.vectors.T, M)
    torch.testing.assert_close(e.vectors.T @ e.vectors, torch.eye(d, dtype=torch.float64))
    lam = torch.linalg.eigvalsh(M)
    torch.testing.assert_close(e.values, lam[lam.abs().argsort(descending=True)][:d])
    a = torch.randn(n, generator=G, dtype=torch.float64)
    torch.testing.assert_close(e.approx(a @ D, d), a @ M @ a)
    batched = feature_eig(B, D, torch.stack([u, 2 * u]))
    torch.testing.assert_close(batched[1].values, 2 * e.values)


def test_top_k_restriction_and_top_pairs_match_brute_force():
    M = _dense(u)
    idx, Mk = feature_interactions(B, D, u, top_k=4)
    assert idx.tolist() == M.norm(dim=1).topk(4).indices.tolist()
    torch.testing.assert_close(Mk, M[idx][:, idx])
    pairs = top_pairs(B, D, u, n=6, chunk_size=4)
    brute = sorted(((2 * M[i, j] if i != j else M[i, i]).item(), i, j) for i in range(n) for j in range(i, n))
    brute = sorted(brute, key=lambda t: -abs(t[0]))[:6]
    assert [(r.feature_i, r.feature_j) for r in pairs.itertuples()] == [(i, j) for _, i, j in brute]
    np.testing.assert_allclose(pairs["interaction"], [v for v, _, _ in brute])
    with pytest.raises(InputError, match="width 5 but the layer reads d_in=6"):
        feature_eig(B, D[:, :5], u)
    with pytest.raises(InputError, match="max_bytes"):
        dense_feature_matrix(B, D, u, max_bytes=10)


def test_low_rank_statistic_matches_a_brute_force(tiny, tokens):
    mk = lambda hook, seed: SAE(SAEConfig(d_in=16, d_sae=24, hook_name=hook, architecture="relu"), seed=seed)
    sin, sout = mk("blocks.1.ln2.hook_normalized", 1), mk("blocks.1.hook_mlp_out", 2)
    with torch.no_grad():
        sout.b_enc.fill_(0.05)
    df = low_rank_statistic(tiny, 1, sin, sout, tokens, ranks=(1, 2), batch_windows=5, chunk=7, progress=False)
    assert len(df) == 24
    with torch.no_grad():
        _, cache = tiny.run_with_cache(tokens)
        x = cache["blocks.1.ln2.hook_normalized"].reshape(-1, 16).double()
        y = cache["blocks.1.hook_mlp_out"].reshape(-1, 16)
        a = torch.cat([sin.encode(x.float()).double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
        Dp = torch.cat([sin.W_dec, sin.b_dec[None]]).double()
        target = sout.encode(y).double()
        Bt = tiny.bilinear(1)
        for f in (0, 5, 11):
            u_f = sout.W_enc[:, f].double()
            M = Dp @ Bt.interaction(u_f.float()).double() @ Dp.T  # dense [n+1, n+1]
            lam, V = torch.linalg.eigh(M)
            order = lam.abs().argsort(descending=True)
            lam, V = lam[order], V[:, order]
            act = target[:, f] > 0
            for r in (1, 2):
                approx = ((a @ V[:, :r]) ** 2 * lam[:r]).sum(-1)
                want = np.corrcoef(approx[act].numpy(), target[act, f].numpy())[0, 1]
                assert df.loc[f, f"corr_rank{r}"] == pytest.approx(want, abs=2e-3)
            full = np.corrcoef(torch.einsum("ni,ij,nj->n", a, M, a)[act].numpy(), target[act, f].numpy())[0, 1]
            assert df.loc[f, "corr_full"] == pytest.approx(full, abs=2e-3)
            assert df.loc[f, "n_active"] == int(act.sum())
    frac = low_rank_fraction(df, rank=2, threshold=0.75)
    assert frac == pytest.approx(float((df["corr_rank2"].dropna() > 0.75).mean()))
