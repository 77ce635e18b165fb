import json

import pytest
import torch

from refusal_core.compatibility import check_edit_fits
from refusal_core.edit import RefusalEdit
from refusal_core.families import detect_family
from refusal_core.file_format import save_refusal_edit
from refusal_core.lora import lora_metadata, lora_state_dict
from refusal_core.types import LayerEdit, RefusalError
from refusal_core.weights import edited_weight


def unit(n, seed):
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def edit(d, seed, concept, family="wan", keys=("blocks.0.cross_attn.k", "blocks.0.cross_attn.v")):
    layer = LayerEdit("blocks.0.cross_attn.k", keys, unit(d, seed + 100)[None], (1.0,))
    return RefusalEdit(
        (layer,),
        {"family": family, "site": "text_kv", "blocks": "0", "dims": str(d), "method": "cpca", "concept": concept},
    )


def test_a_concept_at_strength_zero_is_as_if_absent():
    W = torch.randn(20, 12, generator=torch.Generator().manual_seed(1))
    a, b = edit(12, 4, "a"), edit(12, 5, "b")
    for zero in (0, 1):
        strengths = [1.0, 1.0]
        strengths[zero] = 0.0
        both = RefusalEdit.combine([(a, strengths[0]), (b, strengths[1])])
        alone = (a, b)[1 - zero].layers[0].basis
        Q, s = both.bases()["blocks.0.cross_attn.k"]
        assert Q.shape == (1, 12) and torch.allclose(edited_weight(W, Q, s), edited_weight(W, alone), atol=1e-6)
    Q, s = RefusalEdit.combine([(a, 0.0), (b, 0.0)]).bases()["blocks.0.cross_attn.k"]
    assert torch.equal(edited_weight(W, Q, s), W)


def test_combined_edits_stack_per_layer_and_round_trip(tmp_path):
    a, b = edit(16, 0, "nudity"), edit(16, 1, "gore")
    both = RefusalEdit.combine([(a, 1.0), (b, 0.5)])
    Q, s = both.bases()["blocks.0.cross_attn.v"]
    assert Q.shape == (2, 16) and s.tolist() == [1.0, 0.5]
    assert torch.allclose(Q @ Q.T, torch.eye(2), atol=1e-6) and torch.allclose(Q[0], a.layers[0].basis[0])
    assert [c["concept"] for c in json.loads(both.meta["concepts"])] == ["nudity", "gore"]
    back = RefusalEdit.load(save_refusal_edit(both, tmp_path / "both.safetensors"))
    assert torch.equal(back.bases()["blocks.0.cross_attn.k"][0], Q) and back.layers[0].strengths == (1.0, 0.5)
    with pytest.raises(RefusalError, match="different model families"):
        RefusalEdit.combine([(a, 1.0), (edit(16, 2, "x", family="ltxv"), 1.0)])
    with pytest.raises(RefusalError, match="disagree"):
        RefusalEdit.combine([(a, 1.0), (edit(24, 3, "x"), 1.0)])


def test_lora_state_dict_reproduces_the_edit():
    both = RefusalEdit.combine([(edit(16, 0, "nudity"), 1.0), (edit(16, 1, "gore"), 1.0)])
    weights = {k: torch.randn(24, 16, generator=torch.Generator().manual_seed(i)) for i, k in enumerate(both.bases())}
    sd = lora_state_dict(weights.__getitem__, both, 1.0)
    for name, W in weights.items():
        up, down, alpha = (
            sd[f"diffusion_model.{name}.lora_up.weight"],
            sd[f"diffusion_model.{name}.lora_down.weight"],
            sd[f"diffusion_model.{name}.alpha"],
        )
        assert float(alpha) == down.shape[0] == 2
        Wp = W + (float(alpha) / down.shape[0]) * up @ down
        for d in both.bases()[name][0]:
            assert float((Wp @ d).norm()) <= 1e-5 * float(W.norm())
    meta = lora_metadata(both, 1.0)
    assert meta["refusal_vector.family"] == "wan" and "nudity" in meta["refusal_vector.concept"]


def test_factors_of_an_fp8_weight_are_float32():
    e = edit(16, 0, "nudity")
    W = torch.randn(8, 16) * 0.02
    sd = lora_state_dict(lambda name: W, e, 1.0, lambda name: torch.float8_e4m3fn)
    assert all(t.dtype == torch.float32 for k, t in sd.items() if not k.endswith(".alpha"))
    sd16 = lora_state_dict(lambda name: W, e, 1.0, lambda name: torch.float16)
    assert all(t.dtype == torch.float16 for k, t in sd16.items() if not k.endswith(".alpha"))


def test_fit_checks_name_what_the_vector_was_made_for():
    e = edit(16, 0, "nudity")
    shapes = {"blocks.0.cross_attn.k": (16, 16), "blocks.0.cross_attn.v": (16, 16)}
    check_edit_fits(e, "wan", shapes)
    with pytest.raises(RefusalError, match="made for a Wan 2.1 / 2.2 model"):
        check_edit_fits(e, "hunyuan_video", shapes)
    with pytest.raises(RefusalError, match="16 wide .* 32 wide"):
        check_edit_fits(e, "wan", {k: (32, 32) for k in shapes})
    with pytest.raises(RefusalError, match="lacks"):
        check_edit_fits(e, "wan", {"blocks.0.cross_attn.k": (16, 16)})
    assert detect_family(["head.modulation", "blocks.0.ffn.0.weight"]) == "wan"
    assert detect_family(["txt_in.individual_token_refiner.blocks.0.norm1.weight"]) == "hunyuan_video"
    with pytest.raises(RefusalError, match="supported"):
        detect_family(["joint_blocks.0.x_block.attn.qkv.weight"])
