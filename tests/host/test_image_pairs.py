"""Multi-modal pairs for image-to-video: an image per side, encoded as WanImageToVideo does, on a tiny
Wan 2.1 i2v with ComfyUI's own VAE (random, real size) and a small ClipVisionModel."""

from __future__ import annotations

import pytest
import torch

from tests.host import comfy_host, tiny_models
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def setup(tmp_path_factory, nodes):
    import comfy.sd
    import comfy.utils
    from safetensors.torch import load_file

    from tests.host.minilm_clip import MiniLMClip

    d = tmp_path_factory.mktemp("i2v")
    i2v_path = tiny_models.wan(d / "tiny_wan21_i2v.safetensors", model_type="i2v", in_dim=36)
    t2v = tiny_models.load(tiny_models.wan(d / "tiny_wan21_t2v.safetensors"))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tiny_models.wan_vae(d / "wan_2.1_vae_random.safetensors"))))
    vision = tiny_models.clip_vision(d / "clip_vision")
    g = torch.Generator().manual_seed(0)
    unsafe_images, safe_image = torch.rand(5, 64, 64, 3, generator=g), torch.rand(1, 64, 64, 3, generator=g)
    text_pairs = nodes["PromptPairLoader"].execute(MiniLMClip(), EXTRACTION_PAIRS, NEUTRAL).result[0]
    pairs = (
        nodes["AddImagesToPromptPairs"].execute(text_pairs, vae, unsafe_images, safe_image, 64, 64, 5, vision).result[0]
    )
    return dict(
        i2v=tiny_models.load(i2v_path),
        weights=load_file(str(i2v_path)),
        t2v=t2v,
        vae=vae,
        vision=vision,
        text_pairs=text_pairs,
        pairs=pairs,
        unsafe_images=unsafe_images,
        safe_image=safe_image,
    )


def test_each_side_is_conditioned_as_wan_image_to_video_does(setup):
    from comfy_extras.nodes_wan import WanImageToVideo

    u, s = setup["pairs"].pairs[1]
    text_cond = setup["text_pairs"].pairs[1][0].conditioning
    ref = WanImageToVideo.execute(
        text_cond,
        text_cond,
        setup["vae"],
        64,
        64,
        5,
        1,
        start_image=setup["unsafe_images"][1:2],
        clip_vision_output=setup["vision"].encode_image(setup["unsafe_images"][1:2], crop=True),
    ).result[0]
    for key in ("concat_latent_image", "concat_mask"):
        assert torch.equal(u.conditioning[0][1][key], ref[0][1][key])
    assert torch.equal(
        u.conditioning[0][1]["clip_vision_output"]["penultimate_hidden_states"],
        ref[0][1]["clip_vision_output"]["penultimate_hidden_states"],
    )
    assert not torch.equal(u.conditioning[0][1]["concat_latent_image"], s.conditioning[0][1]["concat_latent_image"])
    assert u.text == setup["text_pairs"].pairs[1][0].text
    # the ordinary text shares the neutral image, encoded once: each phrase gets what WanImageToVideo gives it
    text_o, o = setup["text_pairs"].ordinary[5], setup["pairs"].ordinary[5]
    image = setup["safe_image"]
    ref = WanImageToVideo.execute(
        text_o.conditioning,
        text_o.conditioning,
        setup["vae"],
        64,
        64,
        5,
        1,
        start_image=image,
        clip_vision_output=setup["vision"].encode_image(image, crop=True),
    ).result[0]
    assert torch.equal(o.conditioning[0][0], ref[0][0]) and o.text == text_o.text
    for key in ("concat_latent_image", "concat_mask"):
        assert torch.equal(o.conditioning[0][1][key], ref[0][1][key]), key
    assert torch.equal(
        o.conditioning[0][1]["clip_vision_output"]["penultimate_hidden_states"],
        ref[0][1]["clip_vision_output"]["penultimate_hidden_states"],
    )


@pytest.mark.parametrize("site", ["image_kv", "text_kv", "ffn_in"])
def test_image_pairs_extract_and_erase(nodes, setup, site):
    import comfy.model_management

    model, weights = setup["i2v"], setup["weights"]
    stats = (
        nodes["ExtractRefusalVector"].execute(model, setup["pairs"], site, "all", "0.9,0.5", 256, 256, 1, 0).result[0]
    )
    assert stats.meta["latent_shape"] == "1x16x2x8x8"  # the images' 64x64, 5 frames; not the 256x256 probe size
    edit = nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5).result[0]
    edited = nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0]
    comfy.model_management.load_models_gpu([edited], force_full_load=True)
    now = edited.model.diffusion_model.state_dict()
    for name, (Q, s) in edit.bases().items():
        assert comfy_host.reads_as_edited(now[f"{name}.weight"], weights[f"{name}.weight"], Q[0], float(s[0])), name
    if site == "image_kv":
        assert set(edit.directions()) == {f"blocks.{b}.cross_attn.{k}" for b in range(3) for k in ("k_img", "v_img")}
    assert comfy_host.base_untouched(model, weights)


def test_images_on_a_text_to_video_model_are_refused(nodes, setup):
    from refusal_pack.refusal_core.types import RefusalError

    with pytest.raises(RefusalError, match="does not take an image"):
        nodes["ExtractRefusalVector"].execute(setup["t2v"], setup["pairs"], "text_kv", "all", "0.9", 64, 64, 1, 0)


def test_image_count_must_match_the_pairs(nodes, setup):
    from refusal_pack.refusal_core.types import RefusalError

    with pytest.raises(RefusalError, match="3 images for 5 pairs"):
        nodes["AddImagesToPromptPairs"].execute(
            setup["text_pairs"], setup["vae"], setup["unsafe_images"][:3], setup["safe_image"], 64, 64, 1
        )


@pytest.mark.parametrize("site", ["image_kv", "text_kv"])
def test_image_pairs_are_read_before_the_blocks_as_full_forwards_read_them(nodes, setup, monkeypatch, site):
    """The image tokens (Wan's img_emb) and the text context are read where they are computed, no block runs,
    and the statistics are those of full forwards read in every block."""
    import refusal_pack.refusal_core as core

    from tests.host.test_forward_depth import assert_same_stats, block_calls, full_depth

    args = (setup["i2v"], setup["pairs"], site, "all", "0.9", 256, 256, 1, 0)
    with block_calls(setup["i2v"].model.diffusion_model) as calls:
        fast = nodes["ExtractRefusalVector"].execute(*args).result[0]
    assert not any(calls.values()), calls
    monkeypatch.setattr(core.forwards, "read_inputs", full_depth(core))
    assert_same_stats(fast, nodes["ExtractRefusalVector"].execute(*args).result[0])
