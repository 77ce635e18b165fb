"""The checkpoints Wan users load: Comfy-Org's fp8-scaled files through the stock UNETLoader, city96's GGUF
files through ComfyUI-GGUF's UnetLoaderGGUF, and LoRAs stacked before or after the edit. The residual
||W' d|| / ||W d|| is measured on the weights as the forward computes with them (dequantized, patched)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.host import comfy_host, tiny_models
from tests.host.graphs import erase_nodes

pytestmark = pytest.mark.host
GGUF_TYPES = ("F16", "Q8_0", "Q4_0")
REPORT = {}


def report(key: str, value) -> None:
    REPORT[key] = value
    if os.environ.get("REFUSAL_REPORT_DIR"):
        Path(os.environ["REFUSAL_REPORT_DIR"], "quantized.json").write_text(json.dumps(REPORT, indent=1) + "\n")


@pytest.fixture(scope="module")
def fp8_model(nodes, tmp_path_factory):
    import comfy.sd

    path = tmp_path_factory.mktemp("fp8") / "tiny_wan_fp8_scaled.safetensors"
    from safetensors.torch import save_file

    save_file(tiny_models.fp8_scaled(tiny_models.wan_state_dict()), str(path))
    return comfy.sd.load_diffusion_model(str(path))


def test_fp8_scaled_edit_is_exact_to_the_format(nodes, fp8_model):
    """The factors come from the weight as ComfyUI dequantizes it (scale included) and stay float32, so the
    stored edited weight is as close to W (I - d d^T) as the format allows: the same residual as storing
    W (I - d d^T) itself with ComfyUI's own stochastic rounding, within 1.2x."""
    import comfy.float
    import comfy.model_patcher

    from tests.host.minilm_clip import MiniLMClip

    model = fp8_model
    assert model.model.model_config.scaled_fp8 == torch.float8_e4m3fn
    weights = comfy_host.loaded_weights(model)
    pp = nodes["PromptPairLoader"].execute(MiniLMClip(), "", "", "(none)", "nudity", "").result[0]
    stats = nodes["ExtractRefusalVector"].execute(model, pp, "auto", "all", "0.9,0.6,0.3", 64, 64, 1, 0).result[0]
    edit = nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5).result[0]
    lora = comfy_host.pack_module("nodes.host.patch").refusal_lora(model, edit, 1.0)
    assert {t.dtype for k, t in lora.items() if not k.endswith(".alpha")} == {torch.float32}
    edited = nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0]
    names = list(edit.bases())
    before, after = comfy_host.computed_weights(model, names), comfy_host.computed_weights(edited, names)
    rows = {}
    for name in names:
        layer = model.model.diffusion_model.get_submodule(name)
        Q, s = edit.bases()[name]
        d, s = Q[0].float(), float(s[0])
        W = before[name]
        ideal = W - s * (W @ d)[:, None] * d[None]
        scale = layer.scale_weight.detach().float()
        floor_w = comfy.float.stochastic_rounding(
            ideal / scale,
            torch.float8_e4m3fn,
            seed=comfy.model_patcher.string_to_seed(f"diffusion_model.{name}.weight"),
        )
        # what is left of d's part beyond W (I - s d d^T) (at s = 1 all of it), against the format's rounding of it
        floor = float(((floor_w.float() * scale - ideal) @ d).norm() / (W @ d).norm())
        ours = float(((after[name] - ideal) @ d).norm() / (W @ d).norm())
        rows[name] = {"residual": ours, "floor": floor}
        assert ours <= 1.2 * floor, (name, ours, floor)
    print(
        "\nfp8-scaled ||W'd|| / ||Wd|| against the format's floor:\n"
        + "\n".join(f"{k}: {v['residual']:.4f} (floor {v['floor']:.4f})" for k, v in rows.items())
    )
    report("fp8_scaled", rows)
    assert comfy_host.base_untouched(model, weights)


@pytest.mark.parametrize("fmt", ["fp16", "fp8_scaled"])
def test_a_lora_loaded_before_the_edit_is_in_the_weight_it_is_computed_on_fp16_fp8(nodes, fmt, tmp_path):
    """LoraLoaderModelOnly -> Extract -> Apply: the edit is computed on base + LoRA, so it erases d from what is sampled."""
    import comfy.sd
    import comfy.utils
    from safetensors.torch import save_file

    from tests.host.minilm_clip import MiniLMClip

    sd = tiny_models.wan_state_dict(seed=3)
    stored = {k: v.half() for k, v in sd.items()} if fmt == "fp16" else tiny_models.fp8_scaled(sd)
    save_file(stored, str(tmp_path / "wan.safetensors"))
    base = comfy.sd.load_diffusion_model(str(tmp_path / "wan.safetensors"))
    lora = comfy.utils.load_torch_file(str(tiny_models.random_lora(sd, tmp_path / "lora.safetensors")))
    with_lora, _ = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0)  # what LoraLoaderModelOnly does
    with torch.inference_mode():  # as ComfyUI executes a prompt: fp8 patches are rounded without gradients
        pp = nodes["PromptPairLoader"].execute(MiniLMClip(), "", "", "(none)", "nudity", "").result[0]
        stats = (
            nodes["ExtractRefusalVector"].execute(with_lora, pp, "auto", "all", "0.9,0.6,0.3", 64, 64, 1, 0).result[0]
        )
        edit = nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5).result[0]
        edited = nodes["ApplyRefusalToModel"].execute(with_lora, edit, 1.0).result[0]
    bases = edit.bases()
    before, after = (
        comfy_host.computed_weights(with_lora, list(bases)),
        comfy_host.computed_weights(edited, list(bases)),
    )
    # W' d = (1 - s) W d at the layer's strength s, with W the base + LoRA weight: how far off, relative to W d
    worst = max(comfy_host.edit_residual(after[n], before[n], Q[0], float(s[0])) for n, (Q, s) in bases.items())
    # fp16 storage rounds W' to 2^-11 of its size; fp8 to its 3-bit mantissa (the floor test above bounds it exactly)
    assert worst <= (1e-3 if fmt == "fp16" else 0.1), worst
    report(f"lora_before_{fmt}", worst)


def gguf_graph(unet: str, lora_before: str | None = None, lora_after: str | None = None) -> dict:
    """UnetLoaderGGUF -> [LoRA] -> the template's erasure part -> the residual on the computed weights, a LoRA
    export and a combination of two concepts."""
    g = {
        "unet": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": unet}},
        "clip": {"class_type": "RefusalTestMiniLMCLIPLoader", "inputs": {}},
    }
    source = ["unet", 0]
    if lora_before:
        g["lora_before"] = {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": source, "lora_name": lora_before, "strength_model": 1.0},
        }
        source = ["lora_before", 0]
    g.update(erase_nodes(site="auto"))
    g["extract"]["inputs"]["model"] = source
    g["apply"]["inputs"]["model"] = source
    edited = ["apply", 0]
    if lora_after:
        g["lora_after"] = {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": edited, "lora_name": lora_after, "strength_model": 1.0},
        }
        edited = ["lora_after", 0]
    g["residual"] = {
        "class_type": "RefusalTestResidual",
        "inputs": {"edited": edited, "reference": source, "refusal_vector": ["factor", 0]},
    }
    return g


@pytest.fixture(scope="module")
def gguf_server(server):
    models = server.base / "models"
    (models / "loras").mkdir(parents=True, exist_ok=True)
    sd = tiny_models.wan_state_dict()
    for qtype in GGUF_TYPES:
        tiny_models.gguf_file(sd, models / "diffusion_models" / f"tiny_wan_{qtype}.gguf", qtype)
    tiny_models.random_lora(sd, models / "loras" / "speedup_stand_in.safetensors")
    return server


def residuals(result: dict) -> dict[str, float]:
    assert result.get("status", {}).get("status_str") == "success", result
    return json.loads(result["outputs"]["residual"]["text"][0])


@pytest.mark.parametrize("qtype", GGUF_TYPES)
def test_gguf_models_are_erased_extracted_exported_and_combined(gguf_server, qtype):
    server = gguf_server
    g = gguf_graph(f"tiny_wan_{qtype}.gguf")
    g["save_lora"] = {
        "class_type": "SaveRefusalAsLoRA",
        "inputs": {
            "model": ["unet", 0],
            "refusal_vector": ["factor", 0],
            "strength": 1.0,
            "filename_prefix": f"gguf/{qtype}",
        },
    }
    g["factor_b"] = {
        "class_type": "LowRankFactorize",
        "inputs": {"refusal_vector": ["extract", 0], "method": "mean_diff", "k": 100, "alpha": 0.5},
    }
    g["combined"] = {
        "class_type": "CombineRefusalVectors",
        "inputs": {
            "refusal_vector_a": ["factor", 0],
            "strength_a": 1.0,
            "refusal_vector_b": ["factor_b", 0],
            "strength_b": 1.0,
        },
    }
    g["apply_both"] = {
        "class_type": "ApplyRefusalToModel",
        "inputs": {"model": ["unet", 0], "refusal_vector": ["combined", 0], "strength": 1.0},
    }
    g["residual_both"] = {
        "class_type": "RefusalTestResidual",
        "inputs": {"edited": ["apply_both", 0], "reference": ["unet", 0], "refusal_vector": ["combined", 0]},
    }
    result = server.run(g)
    edit, both = residuals(result), json.loads(result["outputs"]["residual_both"]["text"][0])
    assert edit and max(edit.values()) <= 1e-3 and max(both.values()) <= 1e-3, (edit, both)
    saved = list((server.base / "models" / "loras" / "gguf").glob(f"{qtype}_*.safetensors"))
    assert saved
    # the exported LoRA through the stock loader erases as Apply does
    g2 = gguf_graph(f"tiny_wan_{qtype}.gguf")
    g2["lora"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": f"gguf/{saved[-1].name}", "strength_model": 1.0},
    }
    g2["residual"]["inputs"]["edited"] = ["lora", 0]
    via_lora = residuals(server.run(g2))
    assert max(via_lora.values()) <= 1e-3, via_lora
    print(
        f"\nGGUF {qtype}: max ||W'd||/||Wd|| apply {max(edit.values()):.2e}, combined {max(both.values()):.2e}, LoRA file {max(via_lora.values()):.2e}"
    )
    report(
        f"gguf_{qtype}",
        {"apply": max(edit.values()), "combined": max(both.values()), "lora_file": max(via_lora.values())},
    )


@pytest.mark.parametrize("qtype", GGUF_TYPES[:2])
def test_a_lora_loaded_before_the_edit_is_in_the_weight_it_is_computed_on(gguf_server, qtype):
    residual = residuals(
        gguf_server.run(gguf_graph(f"tiny_wan_{qtype}.gguf", lora_before="speedup_stand_in.safetensors"))
    )
    assert max(residual.values()) <= 1e-3, residual
    report(f"lora_before_gguf_{qtype}", max(residual.values()))


def test_a_lora_loaded_after_the_edit_adds_part_of_the_direction_back(gguf_server):
    """Measured, not prevented: W'' = W (I - d d^T) + B A reads d again through B A d."""
    residual = residuals(gguf_server.run(gguf_graph("tiny_wan_Q8_0.gguf", lora_after="speedup_stand_in.safetensors")))
    assert max(residual.values()) > 1e-2
    print(f"\nLoRA after the edit: ||W''d|| / ||Wd|| up to {max(residual.values()):.3f}")
    report("lora_after_gguf_Q8_0", {"max": max(residual.values()), "mean": sum(residual.values()) / len(residual)})


def test_a_quant_type_the_pack_cannot_read_gets_an_error_naming_it(nodes):
    patch = comfy_host.pack_module("nodes.host.patch")
    RefusalError = comfy_host.pack_module("refusal_core.types").RefusalError

    class Weird(torch.Tensor):
        tensor_type = type("Q", (), {"name": "Q1_X"})()
        tensor_shape = torch.Size((4, 4))

    layer = torch.nn.Linear(4, 4)
    layer.weight = torch.nn.Parameter(torch.zeros(2).as_subclass(Weird), requires_grad=False)
    with pytest.raises(RefusalError, match="Q1_X"):
        patch.dequantized_gguf(layer, "blocks.0.ffn.0")
