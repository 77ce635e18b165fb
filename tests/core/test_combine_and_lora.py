import json

import pytest
import torch

from refusal_core.combine import combine
from refusal_core.edit import apply_dense, subspace_factors
from refusal_core.fit import check_vector_fits, detect_family
from refusal_core.io import load_refusal_vector, save_refusal_vector
from refusal_core.lora import lora_metadata, lora_state_dict
from refusal_core.types import LayerVector, RefusalError, RefusalVector


def unit(n, seed):
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def vector(d, seed, concept, family="wan", keys=("blocks.0.cross_attn.k", "blocks.0.cross_attn.v")):
    D = torch.randn(6, d, generator=torch.Generator().manual_seed(seed))
    layer = LayerVector("blocks.0.cross_attn.k", keys, D, torch.randn(4, d), D.mean(0), direction=unit(d, seed + 100))
    return RefusalVector((layer,), {"family": family, "site": "text_kv", "blocks": "0", "dims": str(d), "method": "cpca", "concept": concept})


def test_subspace_edit_removes_every_direction():
    W = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    D = torch.stack([unit(16, 1), unit(16, 2), unit(16, 3)])
    up, down = subspace_factors(W, D, torch.ones(3))
    Wp = W + up @ down
    assert up.shape == (32, 3) and down.shape == (3, 16)
    for d in D:
        assert float((Wp @ d).norm()) <= 1e-5 * float(W.norm())
    # one concept equals the rank-1 edit
    up1, down1 = subspace_factors(W, D[:1], torch.ones(1))
    assert torch.allclose(W + up1 @ down1, apply_dense(W, D[0]), atol=1e-5)


def test_a_concept_at_strength_zero_is_as_if_absent():
    W = torch.randn(20, 12, generator=torch.Generator().manual_seed(1))
    D = torch.stack([unit(12, 4), unit(12, 5)])
    for zero in (0, 1):
        up, down = subspace_factors(W, D, torch.tensor([1.0, 1.0]).index_fill(0, torch.tensor([zero]), 0.0))
        alone = apply_dense(W, D[1 - zero])
        assert torch.allclose(W + up @ down, alone, atol=1e-5)
    up, down = subspace_factors(W, D, torch.zeros(2))
    assert torch.equal(W + up @ down, W)


def test_combined_vectors_stack_per_layer_and_round_trip(tmp_path):
    a, b = vector(16, 0, "nudity"), vector(16, 1, "gore")
    both = combine([(a, 1.0), (b, 0.5)])
    D, s = both.bases()["blocks.0.cross_attn.v"]
    assert D.shape == (2, 16) and s.tolist() == [1.0, 0.5]
    assert [c["concept"] for c in json.loads(both.meta["concepts"])] == ["nudity", "gore"]
    back = load_refusal_vector(save_refusal_vector(both, tmp_path / "both.safetensors"))
    assert torch.equal(back.bases()["blocks.0.cross_attn.k"][0], D) and back.layers[0].strengths == (1.0, 0.5)
    with pytest.raises(RefusalError, match="different model families"):
        combine([(a, 1.0), (vector(16, 2, "x", family="ltxv"), 1.0)])
    with pytest.raises(RefusalError, match="disagree"):
        combine([(a, 1.0), (vector(24, 3, "x"), 1.0)])
    with pytest.raises(RefusalError, match="factorize each concept"):
        from refusal_core.factorize import factorize

        factorize(both)


def test_lora_state_dict_reproduces_the_edit():
    a, b = vector(16, 0, "nudity"), vector(16, 1, "gore")
    both = combine([(a, 1.0), (b, 1.0)])
    weights = {k: torch.randn(24, 16, generator=torch.Generator().manual_seed(i)) for i, k in enumerate(both.bases())}
    sd = lora_state_dict(weights.__getitem__, both, 1.0)
    for name, W in weights.items():
        up, down, alpha = sd[f"diffusion_model.{name}.lora_up.weight"], sd[f"diffusion_model.{name}.lora_down.weight"], sd[f"diffusion_model.{name}.alpha"]
        assert float(alpha) == down.shape[0] == 2
        Wp = W + (float(alpha) / down.shape[0]) * up @ down
        for d in both.bases()[name][0]:
            assert float((Wp @ d).norm()) <= 1e-5 * float(W.norm())
    meta = lora_metadata(both, 1.0)
    assert meta["refusal_vector.family"] == "wan" and "nudity" in meta["refusal_vector.concept"]


def test_fit_checks_name_what_the_vector_was_made_for():
    rv = vector(16, 0, "nudity")
    shapes = {"blocks.0.cross_attn.k": (16, 16), "blocks.0.cross_attn.v": (16, 16)}
    check_vector_fits(rv, "wan", shapes)
    with pytest.raises(RefusalError, match="made for a Wan 2.1 / 2.2 model"):
        check_vector_fits(rv, "hunyuan_video", shapes)
    with pytest.raises(RefusalError, match="16 wide .* 32 wide"):
        check_vector_fits(rv, "wan", {k: (32, 32) for k in shapes})
    with pytest.raises(RefusalError, match="lacks"):
        check_vector_fits(rv, "wan", {"blocks.0.cross_attn.k": (16, 16)})
    assert detect_family(["head.modulation", "blocks.0.ffn.0.weight"]) == "wan"
    assert detect_family(["txt_in.individual_token_refiner.blocks.0.norm1.weight"]) == "hunyuan_video"
    with pytest.raises(RefusalError, match="supported"):
        detect_family(["joint_blocks.0.x_block.attn.qkv.weight"])
