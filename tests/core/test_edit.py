import pytest
import torch

from refusal_core.edit import RefusalEdit
from refusal_core.types import LayerEdit, RefusalError
from refusal_core.weights import edit_factors, edited_state_dict, edited_weight, orthonormal_rows, residual


def unit(n, seed=0):
    d = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


@pytest.mark.parametrize("shape", [(8, 8), (32, 16), (5, 64)])
def test_full_strength_removes_the_direction(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    d = unit(shape[1])
    Wp = edited_weight(W, d)
    assert float((Wp @ d).norm()) <= 1e-5 * float(W.norm())
    assert residual(Wp, W, d) <= 1e-5


def test_strength_zero_is_the_identity_and_the_edit_is_rank_one():
    W = torch.randn(24, 16, generator=torch.Generator().manual_seed(2))
    d = unit(16)
    assert torch.equal(edited_weight(W, d, lam=0.0), W)
    delta = edited_weight(W, d) - W
    assert torch.linalg.matrix_rank(delta) == 1


def test_factors_are_two_vectors_in_the_weight_dtype():
    W = torch.randn(12, 6).to(torch.bfloat16)
    up, down = edit_factors(W, unit(6), [1.0])
    assert up.shape == (12, 1) and down.shape == (1, 6)
    assert up.dtype == down.dtype == torch.bfloat16
    # orthogonal directions are untouched
    Wf = torch.randn(12, 6)
    d = unit(6)
    v = torch.randn(6)
    v = v - (v @ d) * d
    assert torch.allclose(edited_weight(Wf, d) @ v, Wf @ v, atol=1e-5)


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError):
        edit_factors(torch.randn(4, 5), unit(4), [1.0])
    with pytest.raises(ValueError):
        edit_factors(torch.randn(4, 5), torch.stack([unit(5), unit(5, 1)]), [1.0])


def test_subspace_edit_removes_every_direction_and_one_row_is_the_rank_one_edit():
    W = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    Q, kept = orthonormal_rows(torch.stack([unit(16, 1), unit(16, 2), unit(16, 3)]))
    assert kept == [0, 1, 2] and torch.allclose(Q @ Q.T, torch.eye(3), atol=1e-6)
    up, down = edit_factors(W, Q, torch.ones(3))
    assert up.shape == (32, 3) and down.shape == (3, 16)
    for d in (unit(16, 1), unit(16, 2), unit(16, 3)):
        assert float(((W + up @ down) @ d).norm()) <= 1e-5 * float(W.norm())
    assert torch.allclose(edited_weight(W, Q[:1]), edited_weight(W, unit(16, 1)), atol=1e-6)


def test_orthonormal_rows_drop_a_direction_the_others_span():
    a, b = unit(8, 1), unit(8, 2)
    Q, kept = orthonormal_rows(torch.stack([a, b, (a + b) / (a + b).norm()]))
    assert kept == [0, 1] and Q.shape == (2, 8)
    with pytest.raises(RefusalError):
        orthonormal_rows(torch.zeros(2, 8))


def test_state_dict_edit_leaves_the_input_untouched():
    sd = {"blocks.0.ffn.0.weight": torch.randn(6, 4), "blocks.0.ffn.0.bias": torch.randn(6)}
    copy = {k: v.clone() for k, v in sd.items()}
    edit = RefusalEdit((LayerEdit("blocks.0.ffn.0", ("blocks.0.ffn.0",), unit(4)[None], (1.0,)),), {})
    out = edited_state_dict(sd, edit)
    assert all(torch.equal(sd[k], copy[k]) for k in sd)
    assert torch.equal(out["blocks.0.ffn.0.bias"], sd["blocks.0.ffn.0.bias"])
    assert not torch.equal(out["blocks.0.ffn.0.weight"], sd["blocks.0.ffn.0.weight"])
