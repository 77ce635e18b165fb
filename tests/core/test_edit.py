import pytest
import torch

from refusal_core.edit import apply_dense, edited_state_dict, refusal_factors, residual


def unit(n, seed=0):
    d = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


@pytest.mark.parametrize("shape", [(8, 8), (32, 16), (5, 64)])
def test_full_strength_removes_the_direction(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    d = unit(shape[1])
    Wp = apply_dense(W, d, 1.0)
    assert float((Wp @ d).norm()) <= 1e-5 * float(W.norm())
    assert residual(Wp, W, d) <= 1e-5


def test_strength_zero_is_the_identity_and_the_edit_is_rank_one():
    W = torch.randn(24, 16, generator=torch.Generator().manual_seed(2))
    d = unit(16)
    assert torch.equal(apply_dense(W, d, 0.0), W)
    delta = apply_dense(W, d, 1.0) - W
    assert torch.linalg.matrix_rank(delta) == 1


def test_factors_are_two_vectors_in_the_weight_dtype():
    W = torch.randn(12, 6).to(torch.bfloat16)
    up, down = refusal_factors(W, unit(6))
    assert up.shape == (12, 1) and down.shape == (1, 6)
    assert up.dtype == down.dtype == torch.bfloat16
    # orthogonal directions are untouched
    Wf = torch.randn(12, 6)
    d = unit(6)
    v = torch.randn(6)
    v = v - (v @ d) * d
    assert torch.allclose(apply_dense(Wf, d) @ v, Wf @ v, atol=1e-5)


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError):
        refusal_factors(torch.randn(4, 5), unit(4))


def test_state_dict_edit_leaves_the_input_untouched():
    sd = {"blocks.0.ffn.0.weight": torch.randn(6, 4), "blocks.0.ffn.0.bias": torch.randn(6)}
    copy = {k: v.clone() for k, v in sd.items()}
    out = edited_state_dict(sd, {"blocks.0.ffn.0": unit(4)})
    assert all(torch.equal(sd[k], copy[k]) for k in sd)
    assert torch.equal(out["blocks.0.ffn.0.bias"], sd["blocks.0.ffn.0.bias"])
    assert not torch.equal(out["blocks.0.ffn.0.weight"], sd["blocks.0.ffn.0.weight"])
