"""Every video family the pack edits, on tiny random checkpoints loaded by ComfyUI's own loader:
extraction, factorization and apply in process on real ModelPatcher objects, at every edit site."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from tests.host import comfy_host, tiny_models
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host

# variant: (builder, expected family, text width, pooled width)
VARIANTS = {
    "wan21_t2v": (lambda p: tiny_models.wan(p), "wan", 4096, None),
    "wan21_i2v": (lambda p: tiny_models.wan(p, model_type="i2v", in_dim=36), "wan", 4096, None),
    "wan22_5b": (lambda p: tiny_models.wan(p, in_dim=48, out_dim=48), "wan", 4096, None),
    "wan22_a14b_high": (lambda p: tiny_models.wan(p, seed=3, in_dim=36), "wan", 4096, None),
    "wan22_a14b_low": (lambda p: tiny_models.wan(p, seed=4, in_dim=36), "wan", 4096, None),
    "hunyuan_video": (tiny_models.hunyuan_video, "hunyuan_video", 768, 768),
    "ltxv": (tiny_models.ltxv, "ltxv", 4096, None),
    "mochi": (tiny_models.mochi, "mochi", tiny_models.MOCHI_TEXT_WIDTH, None),
}
TEXT_SITES = {
    "wan": ["text_kv", "ffn_in"],
    "hunyuan_video": ["text_ffn_in", "ffn_in", "text_qkv", "joint_in", "text_refiner"],
    "ltxv": ["text_kv", "ffn_in"],
    "mochi": ["text_kv", "ffn_in", "text_ffn_in"],
}
CASES = [(v, s) for v, (_, fam, _, _) in VARIANTS.items() for s in TEXT_SITES[fam]]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("families")
    return {name: VARIANTS[name][0](d / f"tiny_{name}.safetensors") for name in VARIANTS}


@pytest.fixture(scope="module")
def loaded(files):
    from safetensors.torch import load_file

    return {name: (tiny_models.load(path), load_file(str(path))) for name, path in files.items()}


def clip_for(variant):
    from tests.host.minilm_clip import MiniLMClip

    _, _, width, pooled = VARIANTS[variant]
    return MiniLMClip(width=width, pooled_width=pooled)


def run(nodes, node_id, *args):
    return nodes[node_id].execute(*args).result


def untouched(model, weights) -> None:
    assert comfy_host.base_untouched(model, weights)


@pytest.mark.parametrize("variant,site", CASES, ids=[f"{v}-{s}" for v, s in CASES])
def test_every_site_of_every_family(nodes, loaded, variant, site):
    import comfy.model_management

    model, weights = loaded[variant]
    host = comfy_host.host()
    assert host.models.model_family(model) == VARIANTS[variant][1]
    pairs = run(nodes, "PromptPairLoader", clip_for(variant), EXTRACTION_PAIRS, NEUTRAL)[0]
    t0 = time.perf_counter()
    stats, scores_img = run(nodes, "ExtractRefusalVector", model, pairs, site, "all", "0.9,0.5", 64, 64, 9, 0)
    t_extract = time.perf_counter() - t0
    edit, _ = run(nodes, "LowRankFactorize", stats, "cpca", 100, 0.5)
    edited = run(nodes, "ApplyRefusalToModel", model, edit, 1.0)[0]
    comfy.model_management.load_models_gpu([edited], force_full_load=True)
    loaded_w = edited.model.diffusion_model.state_dict()
    directions = edit.directions()
    assert directions and scores_img.shape[-1] == 3
    for name, (Q, s) in edit.bases().items():
        assert comfy_host.reads_as_edited(loaded_w[f"{name}.weight"], weights[f"{name}.weight"], Q[0], float(s[0])), (
            name
        )
    untouched(model, weights)
    report = os.environ.get("REFUSAL_REPORT_DIR")
    if report:
        with open(Path(report, "families.jsonl"), "a") as f:
            f.write(
                json.dumps(
                    {
                        "variant": variant,
                        "site": site,
                        "blocks": edit.meta["blocks"],
                        "keys": len(directions),
                        "extract_s": round(t_extract, 3),
                    }
                )
                + "\n"
            )


# The weight that carries a family's pooled caption (one vector per prompt, added to the modulation of every
# block): a route from the prompt to the video that no text site's edit reaches.
POOLED_ROUTE = {"hunyuan_video": "vector_in.out_layer", "mochi": "t5_y_embedder.to_out"}


@pytest.fixture(scope="module")
def pooled_cut(files, tmp_path_factory):
    """{variant: (model, weights)} for the families with a pooled caption, that route's last linear zeroed."""
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("pooled_cut")
    out = {}
    for name, prefix in POOLED_ROUTE.items():
        sd = load_file(str(files[name]))
        sd = {k: (torch.zeros_like(v) if k.startswith(prefix + ".") else v) for k, v in sd.items()}
        path = d / f"tiny_{name}.safetensors"
        save_file(sd, str(path))
        out[name] = (tiny_models.load(path), load_file(str(path)))
    return out


@pytest.mark.parametrize("variant", ["wan21_t2v", "hunyuan_video", "ltxv", "mochi"])
def test_auto_layers_against_last2(nodes, loaded, pooled_cut, variant):
    """Held-out leakage / collateral per family at its default site, layers 'auto' vs 'last2' vs a random edit.
    Where the family also passes a pooled caption to every block, the edit cannot reach that route: it is
    compared on the model as loaded (reported) and with the route cut (asserted), to show what it does reach."""
    host = comfy_host.host()
    clip = clip_for(variant)

    pairs = run(nodes, "PromptPairLoader", clip, EXTRACTION_PAIRS, NEUTRAL)[0]

    def compare(model) -> dict:
        score = comfy_host.held_out_scorer(nodes, model, clip, host.models.probe_latent(model, 64, 64, 9, 11))
        rows = {}
        for layers in ("auto", "last2"):
            stats = run(nodes, "ExtractRefusalVector", model, pairs, "auto", layers, "0.9,0.5", 64, 64, 9, 0)[0]
            edit = run(nodes, "LowRankFactorize", stats, "cpca", 100, 0.5)[0]
            rows[layers] = (edit.meta["site"], edit.meta["blocks"], *score(edit))
        rows["random (last2)"] = (edit.meta["site"], edit.meta["blocks"], *score(comfy_host.random_like(edit, 5)))
        return rows

    models = {"kept": loaded[variant]}
    if variant in POOLED_ROUTE:
        models["cut"] = pooled_cut[variant]
    results = {route: compare(model) for route, (model, _) in models.items()}
    report = os.environ.get("REFUSAL_REPORT_DIR")
    for route, rows in results.items():
        pooled = route if variant in POOLED_ROUTE else None
        for k, (site, blocks, lk, col) in rows.items():
            print(
                f"\n{variant:14} {site:12} {k:15} pooled {pooled} blocks {blocks:8} leakage {lk:.3f} collateral {col:.3f}"
            )
        if report:
            with open(Path(report, "families_leakage.jsonl"), "a") as f:
                for k, (site, blocks, lk, col) in rows.items():
                    row = {"variant": variant, "site": site, "layers": k, "pooled_caption": pooled}
                    f.write(json.dumps(row | {"blocks": blocks, "leakage": lk, "collateral": col}) + "\n")
    asserted = results["cut" if variant in POOLED_ROUTE else "kept"]
    assert asserted["auto"][2] < asserted["random (last2)"][2]
    for model, weights in models.values():
        untouched(model, weights)
