"""The closed-form map (closed_form.py): what it solves, how it applies, exports, combines and saves."""

import pytest
import torch

from refusal_core.edit import RefusalEdit, load_refusal_file
from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import closed_form
from refusal_core.families import FAMILIES
from refusal_core.file_format import save_refusal_edit
from refusal_core.lora import lora_state_dict
from refusal_core.solvers.linalg import svd_factors
from refusal_core.types import LayerEdit, LayerStats, RefusalError, RefusalStats
from refusal_core.weights import edited_state_dict
from tests.core.toy_wan import NEUTRAL, PAIRS, Counter, prompts, random_wan

WAN = FAMILIES["wan"].sites


def layer_stats(n=6, m=10, d=24, seed=0, point="blocks.0.cross_attn.k"):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(n, d, generator=g)
    C = V + torch.randn(n, d, generator=g)
    E = torch.randn(m, d, generator=g)
    return LayerStats(point, (point, point.replace(".k", ".v")), C - V, E, (C - V).mean(0), unsafe=C, safe=V)


def dense_delta(layer, preserve, ridge):
    """Delta = D^T C (C^T C + beta P^T P + mu I)^-1 as the module docstring writes it, densely."""
    C, V, E = layer.unsafe.double(), layer.safe.double(), layer.neutral.double()
    P = torch.cat([E, V])
    n, d = C.shape
    beta, mu = preserve * n / P.shape[0], ridge * float(C.square().sum()) / n
    G = C.T @ C + beta * P.T @ P + mu * torch.eye(d, dtype=torch.float64)
    return (C - V).T @ C @ torch.linalg.inv(G)


def as_matrix(edit, key):
    P, s, Q = edit.maps()[key]
    return P.double().T @ torch.diag(s.double()) @ Q.double()


@pytest.mark.parametrize("preserve,ridge", [(1.0, 1e-3), (0.1, 1e-2), (10.0, 1e-3)])
def test_the_map_is_the_least_squares_solution_in_its_docstring(preserve, ridge):
    layer = layer_stats()
    edit = closed_form(RefusalStats((layer,), {"family": "wan", "site": "text_kv"}), preserve, ridge)
    assert torch.allclose(as_matrix(edit, layer.point), dense_delta(layer, preserve, ridge), atol=1e-5)
    assert edit.layers[0].rank == 6 and edit.meta["rank"] == "6" and edit.meta["method"] == "closed_form"


def test_more_preservation_moves_the_neutral_rows_less_and_fits_the_pairs_less():
    layer = layer_stats(n=8, m=30, d=12)  # fewer dimensions than rows: fitting the pairs moves the neutral rows
    moved, residual = [], []
    for preserve in (0.01, 1.0, 100.0):
        edit = closed_form(RefusalStats((layer,), {"family": "wan"}), preserve, 1e-4)
        Delta = as_matrix(edit, layer.point)
        moved.append(float((layer.neutral.double() @ Delta.T).norm()))
        residual.append(float(edit.meta["residual"]))
    assert moved[0] > moved[1] > moved[2] and residual[0] < residual[1] < residual[2]
    assert residual[0] < 0.05  # with little to preserve, every unsafe row goes to its twin


def test_svd_factors_are_orthonormal_and_exact():
    g = torch.Generator().manual_seed(3)
    A, B = torch.randn(5, 30, generator=g, dtype=torch.float64), torch.randn(5, 30, generator=g, dtype=torch.float64)
    P, s, Q = svd_factors(A, B)
    assert torch.allclose(P.T @ torch.diag(s) @ Q, A.T @ B, atol=1e-10)
    assert torch.allclose(P @ P.T, torch.eye(5, dtype=torch.float64), atol=1e-10) and torch.allclose(
        Q @ Q.T, torch.eye(5, dtype=torch.float64), atol=1e-10
    )
    assert svd_factors(A, 0 * B)[1].numel() == 0


def test_the_map_applies_and_exports_as_w_times_i_minus_delta(tmp_path):
    layer = layer_stats()
    edit = closed_form(RefusalStats((layer,), {"family": "wan", "site": "text_kv"}))
    W = torch.randn(20, 24, generator=torch.Generator().manual_seed(9))
    state = {f"{k}.weight": W.clone() for k in layer.edit_keys}
    want = W.double() @ (torch.eye(24, dtype=torch.float64) - 0.7 * as_matrix(edit, layer.point))
    out = edited_state_dict(state, edit, 0.7)
    sd = lora_state_dict(lambda name: state[f"{name}.weight"], edit, 0.7)
    for k in layer.edit_keys:
        assert torch.allclose(out[f"{k}.weight"].double(), want, atol=1e-5)
        up, down = sd[f"diffusion_model.{k}.lora_up.weight"], sd[f"diffusion_model.{k}.lora_down.weight"]
        assert float(sd[f"diffusion_model.{k}.alpha"]) == down.shape[0] == 6
        assert torch.allclose((W + up @ down).double(), want, atol=1e-5)
        assert torch.equal(state[f"{k}.weight"], W)  # the input state is untouched
    back, _ = load_refusal_file(save_refusal_edit(edit, tmp_path / "map.safetensors", include_statistics=True))
    assert torch.equal(back.layers[0].left, edit.layers[0].left) and torch.equal(
        back.layers[0].basis, edit.layers[0].basis
    )
    again = closed_form(back.source)
    assert torch.allclose(as_matrix(again, layer.point), as_matrix(edit, layer.point), atol=1e-6)


def test_combining_a_map_with_a_projection_composes_them_in_order():
    layer = layer_stats()
    a = closed_form(RefusalStats((layer,), {"family": "wan", "site": "text_kv", "concept": "mickey"}))
    d = torch.randn(24, generator=torch.Generator().manual_seed(5))
    d = d / d.norm()
    b = RefusalEdit(
        (LayerEdit(layer.point, layer.edit_keys, d[None], (1.0,)),),
        {"family": "wan", "site": "text_kv", "concept": "nudity"},
    )
    I = torch.eye(24, dtype=torch.float64)
    for first, second, want in (
        (a, b, (I - as_matrix(a, layer.point)) @ (I - 0.5 * torch.outer(d, d).double())),
        (b, a, (I - 0.5 * torch.outer(d, d).double()) @ (I - as_matrix(a, layer.point))),
    ):
        both = RefusalEdit.combine([(first, 1.0 if first is a else 0.5), (second, 1.0 if second is a else 0.5)])
        assert torch.allclose(I - as_matrix(both, layer.point), want, atol=1e-5)
    assert RefusalEdit.combine([(a, 0.0), (b, 0.0)]).layers[0].strengths == (0.0,)


def test_extraction_keeps_the_aligned_token_rows_at_text_sites_only(tmp_path):
    model = random_wan(0)
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    stats = extract_refusal_stats(
        model, Counter(model), prompts(PAIRS, NEUTRAL), latent, ExtractSettings(WAN["text_kv"], [0, 1], [0.6], "wan")
    )
    for layer in stats.layers:
        assert layer.unsafe.shape == layer.safe.shape == layer.diffs.shape
        assert torch.allclose(layer.unsafe - layer.safe, layer.diffs)
    assert stats.layers[0].unsafe is stats.layers[1].unsafe  # one text context: one tensor, one solve
    saved = save_refusal_edit(closed_form(stats), tmp_path / "shared.safetensors", include_statistics=True)
    back = load_refusal_file(saved)[0].source  # the shared rows are written once and shared again on load
    assert back.layers[0].unsafe is back.layers[1].unsafe and torch.equal(back.layers[1].safe, stats.layers[1].safe)
    video = extract_refusal_stats(
        model, Counter(model), prompts(PAIRS, NEUTRAL), latent, ExtractSettings(WAN["cross_out"], [0], [0.6], "wan")
    )
    assert video.layers[0].unsafe is None
    with pytest.raises(RefusalError, match="needs a text site"):
        closed_form(video)


def test_bad_settings_are_refused():
    stats = RefusalStats((layer_stats(),), {"family": "wan"})
    for preserve, ridge in ((-1.0, 1e-3), (1.0, 0.0), (float("nan"), 1e-3)):
        with pytest.raises(RefusalError, match="preserve"):
            closed_form(stats, preserve, ridge)
