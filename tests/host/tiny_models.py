"""Tiny random checkpoints of every video family the pack edits, with the real key names, built from
ComfyUI's own model classes and loaded through ComfyUI's own loader (so its detection picks the family)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.host import comfy_host

TINY_WAN = dict(dim=128, ffn_dim=256, num_heads=1, num_layers=3)


def random_state_dict(module: torch.nn.Module, seed: int, std: float | None = None) -> dict[str, torch.Tensor]:
    """Norm weights (and RMS-norm gammas) 1, norm biases 0; other tensors ~ randn / sqrt(fan_in) (or * std)."""
    g = torch.Generator().manual_seed(seed)
    norms = {name for name, m in module.named_modules() if "norm" in type(m).__name__.lower()}
    out = {}
    for key, value in module.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in norms or (leaf == "scale" and "norm" in key) or leaf == "gamma":
            out[key] = torch.ones(value.shape) if leaf in ("weight", "scale", "gamma") else torch.zeros(value.shape)
        else:
            fan_in = value[0].numel() if value.ndim >= 2 else value.numel()
            scale = std if std is not None else (fan_in**-0.5 if value.ndim >= 2 else 0.02)
            out[key] = torch.randn(value.shape, generator=g) * scale
    return out


def _save(module: torch.nn.Module, path: Path, seed: int, std: float | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in random_state_dict(module, seed, std).items()}, str(path))
    return path


def testbed_wan(path: Path, dim: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """The embedded default's TinyWan (plain torch, WanModel's key names) as a Wan 2.1 T2V checkpoint, fp32."""
    from testbed.tiny_wan import TinyWan, init_random

    model = init_random(TinyWan(dim=dim, ffn_dim=2 * dim, heads=max(1, dim // 128), layers=layers), seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def wan_state_dict(dim: int = 256, layers: int = 2, seed: int = 0, std: float = 0.015) -> dict[str, torch.Tensor]:
    """A TinyWan state dict whose linear weights have a real model's scale (N(0, std^2): Wan's are about 0.015)."""
    from testbed.tiny_wan import TinyWan, init_random

    sd = init_random(TinyWan(dim=dim, ffn_dim=2 * dim, heads=max(1, dim // 128), layers=layers), seed).state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    return {k: (torch.randn(v.shape, generator=g) * std if v.ndim == 2 else v).contiguous() for k, v in sd.items()}


def fp8_scaled(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's fp8-scaled format, as Comfy-Org's *_fp8_scaled files: every linear weight in float8_e4m3fn
    divided by its per-layer scale_weight (max |W| / 448, fp8's range), and the scaled_fp8 marker key."""
    out = {}
    for k, v in sd.items():
        if v.ndim == 2 and k.endswith(".weight"):
            scale = v.abs().max().float() / 448.0
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[k] = v
    out["scaled_fp8"] = torch.tensor([], dtype=torch.float8_e4m3fn)
    return out


def gguf_file(sd: dict[str, torch.Tensor], path: Path, qtype: str) -> Path:
    """A Wan GGUF file as city96's tools write them (architecture 'wan'): linear weights in `qtype` (F16, Q8_0,
    Q4_0: what the gguf package's quantizer writes), the other tensors F32 (F16 for F16 files)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path=str(path), arch="wan")
    target = gguf.GGMLQuantizationType[qtype]
    for k, v in sd.items():
        data = v.float().numpy()
        kind = (
            target
            if v.ndim == 2 and k.endswith(".weight")
            else (gguf.GGMLQuantizationType.F16 if qtype == "F16" else gguf.GGMLQuantizationType.F32)
        )
        if kind == gguf.GGMLQuantizationType.F16:
            data = data.astype(np.float16)
        elif kind != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(data, kind)
        writer.add_tensor(k, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def random_lora(sd: dict[str, torch.Tensor], path: Path, rank: int = 4, seed: int = 7, size: float = 0.3) -> Path:
    """A LoRA for every attention and FFN linear of a Wan state dict (as step-distillation LoRAs touch them),
    changing each weight by about `size` of its own norm."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if v.ndim != 2 or not k.startswith("blocks.") or not k.endswith(".weight"):
            continue
        name = "diffusion_model." + k[: -len(".weight")]
        up, down = torch.randn(v.shape[0], rank, generator=g), torch.randn(rank, v.shape[1], generator=g)
        delta = up @ down
        c = (size * v.norm() / delta.norm()).sqrt()
        out[f"{name}.lora_up.weight"], out[f"{name}.lora_down.weight"] = (up * c).contiguous(), (down * c).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(out, str(path))
    return path


def sd3(path: Path, seed: int = 0) -> Path:
    """An SD3-architecture image model (hidden 128, 2 blocks): a family the pack does not edit."""
    comfy_host.import_host()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    m = MMDiT(
        input_size=None,
        patch_size=2,
        in_channels=16,
        depth=2,
        out_channels=16,
        adm_in_channels=2048,
        num_patches=64 * 64,
        pos_embed_max_size=64,
        qk_norm="rms",
        x_block_self_attn_layers=[],
        operations=comfy.ops.disable_weight_init,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
    )
    return _save(m, path, seed, std=0.02)


def wan(path: Path, seed: int = 0, model_type: str = "t2v", in_dim: int = 16, out_dim: int = 16) -> Path:
    """Wan 2.1 t2v (in 16), 2.1 i2v (model_type i2v, in 36), 2.2 5B (in/out 48), 2.2 A14B experts (t2v, in 16 or 36)."""
    comfy_host.import_host()
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    m = WanModel(
        model_type=model_type,
        in_dim=in_dim,
        out_dim=out_dim,
        text_dim=4096,
        operations=comfy.ops.disable_weight_init,
        **TINY_WAN,
    )
    return _save(m, path, seed)


def hunyuan_video(path: Path, seed: int = 0) -> Path:
    """HunyuanVideo T2V, hidden 128 (the smallest detection allows), text width 768 (read from the weights)."""
    comfy_host.import_host()
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    m = HunyuanVideo(
        in_channels=16,
        out_channels=16,
        vec_in_dim=768,
        context_in_dim=768,
        hidden_size=128,
        mlp_ratio=4.0,
        num_heads=1,
        depth=3,
        depth_single_blocks=3,
        axes_dim=[16, 56, 56],
        theta=256,
        patch_size=[1, 2, 2],
        qkv_bias=True,
        guidance_embed=True,
        byt5=False,
        meanflow=False,
        operations=comfy.ops.disable_weight_init,
    )
    return _save(m, path, seed)


def ltxv(path: Path, seed: int = 0) -> Path:
    """LTX-Video with 32 heads of width 2 (detection fixes 32 heads, 128 channels, text 4096)."""
    comfy_host.import_host()
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    m = LTXVModel(
        in_channels=128,
        cross_attention_dim=64,
        attention_head_dim=2,
        num_attention_heads=32,
        caption_channels=4096,
        num_layers=3,
        operations=comfy.ops.disable_weight_init,
    )
    return _save(m, path, seed)


MOCHI_TEXT_WIDTH = 64


def mochi(path: Path, seed: int = 0) -> Path:
    comfy_host.import_host()
    import comfy.ops
    from comfy.ldm.genmo.joint_model.asymm_models_joint import AsymmDiTJoint

    m = AsymmDiTJoint(
        depth=3,
        patch_size=2,
        num_heads=2,
        hidden_size_x=64,
        hidden_size_y=32,
        mlp_ratio_x=12288 / 64,
        mlp_ratio_y=4.0,
        learn_sigma=False,
        in_channels=12,
        qk_norm=True,
        qkv_bias=False,
        out_bias=True,
        attn_drop=0.0,
        patch_embed_bias=True,
        posenc_preserve_area=True,
        timestep_mlp_bias=True,
        attend_to_padding=False,
        timestep_scale=1000.0,
        use_t5=True,
        t5_feat_dim=MOCHI_TEXT_WIDTH,
        t5_token_length=256,
        rope_theta=10000.0,
        operations=comfy.ops.disable_weight_init,
    )
    return _save(m, path, seed)


@contextlib.contextmanager
def mochi_sizes_from_weights():
    """ComfyUI 0.3.64 builds every Mochi at the 10B sizes whatever the weights say; while this is
    active its detection reads depth, widths and heads from the weights (the loader is otherwise
    ComfyUI's own, and the family it picks is still GenmoMochi)."""
    import comfy.model_detection as md

    original = md.detect_unet_config

    def detect(state_dict, key_prefix, metadata=None):
        cfg = original(state_dict, key_prefix, metadata=metadata)
        if cfg is not None and cfg.get("image_model") == "mochi_preview":
            p = key_prefix
            hx, cin = state_dict[p + "x_embedder.proj.weight"].shape[:2]
            hy, t5 = state_dict[p + "t5_yproj.weight"].shape
            cfg = dict(
                cfg,
                depth=md.count_blocks(state_dict.keys(), p + "blocks.{}."),
                hidden_size_x=hx,
                in_channels=cin,
                patch_size=state_dict[p + "x_embedder.proj.weight"].shape[-1],
                hidden_size_y=hy,
                t5_feat_dim=t5,
                num_heads=state_dict[p + "pos_frequencies"].shape[1],
                mlp_ratio_x=12288 / hx,
                mlp_ratio_y=4.0,
            )
        return cfg

    md.detect_unet_config = detect
    try:
        yield
    finally:
        md.detect_unet_config = original


def load(path: Path):
    """UNETLoader's loader (comfy.sd.load_diffusion_model)."""
    comfy_host.import_host()
    import comfy.sd

    ctx = mochi_sizes_from_weights() if "mochi" in Path(path).name else contextlib.nullcontext()
    with ctx:
        return comfy.sd.load_diffusion_model(str(path))


def clip_l(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """A random CLIP-L text encoder (the key names of comfy/sd1_clip_config.json), fp16 (fp32 encodes faster on CPU), for CLIPLoader."""
    comfy_host.import_host()
    import json
    import os

    import comfy.ops
    from comfy.clip_model import CLIPTextModel

    with open(os.path.join(comfy_host.comfy_path(), "comfy", "sd1_clip_config.json")) as f:
        config = json.load(f)
    with torch.device("meta"):
        m = CLIPTextModel(config, None, None, comfy.ops.disable_weight_init)
    sd = random_state_dict(m, seed, std=0.02)
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(path))
    return path


def wan_vae(path: Path, seed: int = 0) -> Path:
    """A random Wan 2.1 VAE at its real size (ComfyUI's VAE loader fixes the architecture), fp16."""
    comfy_host.import_host()
    from comfy.ldm.wan.vae import WanVAE

    with torch.device("meta"):  # the configuration comfy.sd.VAE builds for a Wan 2.1 VAE
        m = WanVAE(
            dim=96,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            attn_scales=[],
            temperal_downsample=[False, True, True],
            dropout=0.0,
        )
    sd = random_state_dict(m, seed)
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(path))
    return path


def clip_vision(folder: Path, seed: int = 0):
    """ComfyUI's ClipVisionModel with a 2-layer config of ViT-H's width (1280, what Wan's img_emb reads).
    comfy.clip_vision.load only knows the full-size configs (a random ViT-H takes ~23 s per image on
    2 CPU cores), so the model is built from the class directly with a smaller JSON."""
    comfy_host.import_host()
    import json

    import comfy.clip_vision

    cfg = {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": 1280,
        "image_size": 224,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 256,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": 14,
        "projection_dim": 64,
        "torch_dtype": "float32",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_clip_vision.json").write_text(json.dumps(cfg))
    model = comfy.clip_vision.ClipVisionModel(str(folder / "tiny_clip_vision.json"))
    missing, unexpected = model.load_sd(random_state_dict_of(model.get_sd(), seed))
    assert not missing and not unexpected
    return model


def random_state_dict_of(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random values for a state dict: norm weights 1, everything else ~ N(0, 0.02^2)."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: (
            torch.ones_like(v) if "norm" in k and k.endswith("weight") else torch.randn(v.shape, generator=g) * 0.02
        ).to(v.dtype)
        for k, v in sd.items()
    }
