"""The only module that touches ComfyUI internals (ModelPatcher, CLIP, model_management)."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import comfy.lora
import comfy.model_base
import comfy.model_management
import comfy.sampler_helpers
import comfy.samplers
import comfy.sd
import comfy.utils
import folder_paths
from comfy.weight_adapter import LoRAAdapter

from ..refusal_core.extract import CannotBatch
from ..refusal_core.fit import check_vector_fits
from ..refusal_core.lora import LORA_PREFIX, lora_state_dict
from ..refusal_core.prompts import check_prompt_length
from ..refusal_core.sites import supported
from ..refusal_core.types import EncodedPrompt, RefusalError, RefusalVector

log = logging.getLogger(__name__)

VECTOR_FOLDER = "refusal_vectors"
PREFIX = "diffusion_model."


def register_folders() -> None:
    """models/refusal_vectors, .safetensors only (idempotent)."""
    if VECTOR_FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, VECTOR_FOLDER)
        folder_paths.folder_names_and_paths[VECTOR_FOLDER] = ([path], {".safetensors"})


def vector_files() -> list[str]:
    register_folders()
    return folder_paths.get_filename_list(VECTOR_FOLDER)


def vector_path(name: str) -> str:
    """Full path of a listed vector file; names outside the registered folders are refused."""
    register_folders()
    path = folder_paths.get_full_path(VECTOR_FOLDER, name)
    if path is None:
        raise RefusalError(f"refusal vector '{name}' is not in models/{VECTOR_FOLDER}: pick a file from the list")
    return path


def new_vector_path(prefix: str) -> Path:
    """models/refusal_vectors/<prefix>_00001.safetensors, the next free counter."""
    return new_file_path(VECTOR_FOLDER, prefix)


def new_lora_path(prefix: str) -> Path:
    """models/loras/<prefix>_00001.safetensors, where LoraLoaderModelOnly lists it."""
    return new_file_path("loras", prefix)


def new_file_path(folder: str, prefix: str) -> Path:
    """<first folder of a registered model folder>/<prefix>_NNNNN.safetensors; no '..' or absolute paths."""
    register_folders()
    parts = (prefix or "").split("/")
    if not prefix or not all(re.fullmatch(r"[A-Za-z0-9_\-. ]+", p) and p.strip(". ") for p in parts):
        raise RefusalError(
            f"filename prefix '{prefix}' may only hold letters, digits, spaces, '-', '_', '.' and '/' between folder names "
            "(no empty, '.' or '..' parts)"
        )
    root = Path(folder_paths.get_folder_paths(folder)[0]).resolve()
    base = (root / prefix).resolve()
    if root not in base.parents:
        raise RefusalError(f"filename prefix '{prefix}' leaves models/{folder}")
    n = 1
    while (p := base.parent / f"{base.name}_{n:05d}.safetensors").exists():
        n += 1
    return p


def input_files(suffixes: tuple[str, ...]) -> list[str]:
    folder = folder_paths.get_input_directory()
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(suffixes) and os.path.isfile(os.path.join(folder, f)))


def input_file_path(name: str) -> str:
    """A file directly in ComfyUI's input folder; anything else is refused."""
    folder = Path(folder_paths.get_input_directory()).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise RefusalError(f"pairs file '{name}' is not a file in ComfyUI's input folder")
    return str(path)


# --- loading model files (the evaluation command; in a graph the core loader nodes do this) ---

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")


def load_diffusion_model_file(path: str | os.PathLike, weight_dtype: str = "default") -> Any:
    """A diffusion model file loaded as UNETLoader loads it (the same weight_dtype options)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise RefusalError(f"weight dtype '{weight_dtype}' is not one of UNETLoader's: {', '.join(WEIGHT_DTYPES)}")
    options: dict[str, Any] = {}
    if weight_dtype.startswith("fp8_e4m3fn"):
        options["dtype"] = torch.float8_e4m3fn
        if weight_dtype.endswith("_fast"):
            options["fp8_optimizations"] = True
    elif weight_dtype == "fp8_e5m2":
        options["dtype"] = torch.float8_e5m2
    path = _existing_file(path, "diffusion model")
    try:
        model = comfy.sd.load_diffusion_model(path, model_options=options)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise RefusalError(f"ComfyUI could not load '{Path(path).name}' as a diffusion model (is it the video model's "
                           f"diffusion_models file, not a checkpoint, LoRA or text encoder?): {str(e).splitlines()[0]}") from None
    model_family(model)  # a clear error for a family the pack does not edit
    return model


def clip_types() -> list[str]:
    return [t.name.lower() for t in comfy.sd.CLIPType]


def load_text_encoder_files(paths: list[str | os.PathLike], clip_type: str) -> Any:
    """Text encoder file(s) loaded as CLIPLoader (one file) or DualCLIPLoader (two) loads them."""
    if clip_type not in clip_types():
        raise RefusalError(f"text encoder type '{clip_type}' is not one of ComfyUI's: {', '.join(clip_types())}")
    files = [_existing_file(p, "text encoder") for p in paths]
    try:
        return comfy.sd.load_clip(ckpt_paths=files, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                  clip_type=comfy.sd.CLIPType[clip_type.upper()])
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        names = ", ".join(Path(f).name for f in files)
        raise RefusalError(f"ComfyUI could not load {names} as a '{clip_type}' text encoder (for Wan: umt5_xxl with type wan; "
                           f"for HunyuanVideo: clip_l and llava_llama3 with type hunyuan_video): {str(e).splitlines()[0]}") from None


def _existing_file(path: str | os.PathLike, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise RefusalError(f"{what} file '{path}' does not exist")
    return str(p)


# --- text encoding ----------------------------------------------------------------------------

def _id_lists(tokens: Any) -> list[list[int]]:
    """Every text encoder's token ids (all batches flattened; -1 for embedding tokens)."""
    if not isinstance(tokens, dict):
        return []
    out = []
    for batches in tokens.values():
        try:
            out.append([int(t[0]) if isinstance(t[0], int) else -1 for batch in batches for t in batch])
        except (TypeError, IndexError):
            continue
    return out


def _strip_padding(ids: list[int]) -> tuple[int, ...]:
    """Without the trailing run of one repeated id (padding), keeping one of it (the end token)."""
    end = len(ids)
    while end > 1 and ids[end - 1] == ids[end - 2]:
        end -= 1
    return tuple(ids[:end])


def _token_ids(tokens: Any, n_rows: int) -> tuple[int, ...] | None:
    """The ids of the encoder whose tokens are the conditioning's rows (same count), without padding.

    Models with two encoders (HunyuanVideo: CLIP-L for the pooled vector, an LLM for the rows, its
    template cropped) may have none that lines up; rows are then paired by position.
    """
    for ids in _id_lists(tokens):
        if len(ids) == n_rows:
            return _strip_padding(ids)
    return None


def encode_prompt(clip: Any, text: str) -> EncodedPrompt:
    """Exactly as CLIPTextEncode: clip.tokenize then clip.encode_from_tokens_scheduled.

    Prompts longer than the model's text window are refused before they reach the encoder.
    """
    if clip is None:
        raise RefusalError("no CLIP connected: connect the text encoder that the model uses (for Wan: umt5, type wan)")
    check_prompt_length(text)
    tokens = clip.tokenize(text)
    lengths = [len(_strip_padding(ids)) for ids in _id_lists(tokens) if ids]
    check_prompt_length(text, max(lengths) if lengths else None)
    cond = clip.encode_from_tokens_scheduled(tokens)
    rows = int(cond[0][0].shape[1])
    return EncodedPrompt(text=text, token_ids=_token_ids(tokens, rows), conditioning=cond, text_len=rows)


# --- model ------------------------------------------------------------------------------------

# ComfyUI's model classes (subclasses included: Wan 2.2, i2v variants) -> the pack's family names.
_FAMILY_CLASSES = (
    ("WAN21", "wan"),
    ("HunyuanVideo", "hunyuan_video"),
    ("LTXV", "ltxv"),
    ("GenmoMochi", "mochi"),
)
# (temporal, spatial) compression of each latent format, as the Empty*Latent* nodes use.
_LATENT_DOWNSCALE = {"Wan21": (4, 8), "Wan22": (4, 16), "HunyuanVideo": (4, 8), "LTXV": (8, 32), "Mochi": (6, 8)}


def model_family(model: Any) -> str:
    base = getattr(model, "model", None)
    for class_name, family in _FAMILY_CLASSES:
        cls = getattr(comfy.model_base, class_name, None)
        if cls is not None and isinstance(base, cls):
            return family
    raise RefusalError(f"this model ({type(base).__name__}) is not supported yet; supported: {supported()}")


def diffusion_module(model: Any) -> torch.nn.Module:
    return model.model.diffusion_model


def image_conditioning(conditioning: Any, vae: Any, image: torch.Tensor, width: int, height: int, length: int,
                       clip_vision: Any = None) -> Any:
    """The conditioning with an image, exactly as ComfyUI's WanImageToVideo node builds it (its own code
    runs): the VAE-encoded start frame as concat latent and mask, and, given a CLIP vision model, the
    image's CLIP-vision output encoded as CLIPVisionEncode does (center crop)."""
    from comfy_extras.nodes_wan import WanImageToVideo

    clip_vision_output = clip_vision.encode_image(image, crop=True) if clip_vision is not None else None
    out = WanImageToVideo.execute(conditioning, conditioning, vae, width, height, length, 1,
                                  start_image=image, clip_vision_output=clip_vision_output)
    return out.result[0]


def _first_unsafe_extra(prompts: Any, key: str) -> Any:
    """An entry of the first unsafe prompt's conditioning options (image pairs put theirs there)."""
    cond = prompts.pairs[0][0].conditioning
    return cond[0][1].get(key) if cond and isinstance(cond[0][1], dict) else None


def image_latent_shape(prompts: Any) -> tuple[int, int, int] | None:
    """(T, h, w) of the image conditioning the pairs carry, or None for text-only pairs."""
    concat = _first_unsafe_extra(prompts, "concat_latent_image")
    return tuple(concat.shape[-3:]) if concat is not None else None


def check_image_tokens(prompts: Any) -> None:
    """The image_kv site reads CLIP-vision tokens: without them Wan's image attention reads the text."""
    if _first_unsafe_extra(prompts, "clip_vision_output") is None:
        raise RefusalError(
            "the image_kv site reads the images' CLIP-vision tokens, but these pairs have none: connect a CLIP vision "
            "model (clip_vision_h) to Add Images To Prompt Pairs, or use the text_kv site"
        )


def check_takes_images(model: Any) -> None:
    """Image pairs only mean something for a model that reads an image: say so instead of ignoring them."""
    dm = diffusion_module(model)
    extra = dm.patch_embedding.weight.shape[1] - model.model.latent_format.latent_channels if hasattr(dm, "patch_embedding") else 0
    if isinstance(model.model, comfy.model_base.WAN22):
        raise RefusalError(
            "Wan 2.2 5B takes its start image inside the latent (Wan22ImageToVideoLatent), which image pairs do not support yet: "
            "use text pairs with this model, or the Wan 2.2 A14B / Wan 2.1 image-to-video models for image pairs"
        )
    if model_family(model) != "wan" or extra <= 0:
        raise RefusalError(
            "these prompt pairs carry images, but this model does not take an image (it is not a Wan image-to-video model): "
            "remove the image-pairs node or load an image-to-video checkpoint"
        )


def probe_latent(model: Any, width: int, height: int, length: int, seed: int) -> torch.Tensor:
    """Seeded noise [1, C, T, H, W] in the model's latent space, sized as the family's empty-latent node does."""
    fmt = model.model.latent_format
    t_down, s_down = _LATENT_DOWNSCALE.get(type(fmt).__name__, (4, 8))
    shape = [1, fmt.latent_channels, (length - 1) // t_down + 1, max(2, height // s_down), max(2, width // s_down)]
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _first_cond(conditioning: Any) -> list:
    if not isinstance(conditioning, list) or not conditioning:
        raise RefusalError("a prompt's CONDITIONING is empty: encode it with the model's text encoder")
    return conditioning[:1]


def _runner(model: Any) -> tuple[Callable[[Any, torch.Tensor, float], tuple], Callable[..., torch.Tensor]]:
    """(inputs, apply) for a loaded model. inputs(conditioning, noise [1, ...], sigma) -> (x, s, model conds):
    the noised latent, the sigma tensor and the conditioning's model_conds (ComfyUI cond objects), built
    through the model's own extra_conds (encode_model_conds) as in sampling, for a batch of one.
    apply(x, s, **kwargs) runs apply_model without gradients."""
    comfy.model_management.load_models_gpu([model])
    device = model.load_device
    base = model.model
    topts = model.model_options.get("transformer_options", {})
    text_width = _text_width(model)

    def inputs(conditioning: Any, noise: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        cond = _first_cond(conditioning)
        width = cond[0][0].shape[-1]
        if text_width is not None and width != text_width:
            raise RefusalError(
                f"the conditioning is {width} wide but this model reads text {text_width} wide: "
                "connect the CLIP that belongs to the model (for Wan: umt5_xxl, type wan)"
            )
        x0 = noise.to(device)
        s = torch.tensor([sigma], device=device, dtype=torch.float32)
        x = base.model_sampling.noise_scaling(s, x0, torch.zeros_like(x0))
        conds = comfy.sampler_helpers.convert_cond(cond)
        conds = comfy.samplers.encode_model_conds(base.extra_conds, conds, x, device, "positive")
        model_conds = {k: v.process_cond(batch_size=1, device=device, area=None) for k, v in conds[0]["model_conds"].items()}
        return x, s, model_conds

    def apply(x: torch.Tensor, s: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            return base.apply_model(x, s, transformer_options=dict(topts), **kwargs)

    return inputs, apply


def make_forward(model: Any) -> Callable[[Any, torch.Tensor, float], torch.Tensor]:
    """forward(conditioning, noise, sigma) -> the model's prediction, through apply_model.

    The conditioning goes through the model's own extra_conds (encode_model_conds),
    as in sampling, so every architecture gets its inputs the way it expects.
    """
    inputs, apply = _runner(model)

    def forward(conditioning: Any, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        comfy.model_management.throw_exception_if_processing_interrupted()
        x, s, model_conds = inputs(conditioning, noise, sigma)
        return apply(x, s, **{k: v.concat([]) for k, v in model_conds.items()})

    return forward


def _shapes(value: Any) -> Any:
    """The shapes of a cond object's payload (a tensor, a list of tensors, or a constant: None)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)):
        return tuple(_shapes(v) for v in value)
    return None


def _concatenable(a: dict, b: dict) -> bool:
    """Two prompts' model conds join into one batch without padding: the same keys, ComfyUI's can_concat,
    and exactly the same shapes (can_concat alone lets cross-attention of other lengths in, repeated to a
    common length, which would change the text rows the hooks read)."""
    return a.keys() == b.keys() and all(a[k].can_concat(b[k]) and _shapes(a[k].cond) == _shapes(b[k].cond) for k in a)


def make_forward_batch(model: Any) -> Callable[[Sequence[Any], torch.Tensor, float], torch.Tensor]:
    """forward_batch(conditionings, noise [1, C, T, H, W], sigma) -> the predictions [B, ...] for B prompts in
    ONE apply_model call: each prompt's model conds built exactly as make_forward builds them, concatenated
    along the batch dimension; the latent and sigma repeated B times. Prompts whose cond tensors differ in
    shape (unpadded text of other lengths) raise CannotBatch, and the extraction runs them one per forward,
    so the result is the same either way."""
    inputs, apply = _runner(model)
    batches_run = [True]  # False once the model failed on a batch: one prompt per forward from then on

    def forward_batch(conditionings: Sequence[Any], noise: torch.Tensor, sigma: float) -> torch.Tensor:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if not batches_run[0]:
            raise CannotBatch("this model does not run these prompts as one batch")
        built = [inputs(c, noise, sigma) for c in conditionings]
        x, s, first = built[0]
        others = [b[2] for b in built[1:]]
        if not all(_concatenable(first, o) for o in others):
            raise CannotBatch("the prompts' conditionings differ in shape")
        kwargs = {k: v.concat([o[k] for o in others]) for k, v in first.items()}
        n = len(built)
        try:
            return apply(x.repeat(n, *([1] * (x.ndim - 1))), s.repeat(n), **kwargs)
        except RuntimeError as e:
            # Some models take one prompt at a time only (ComfyUI 0.3.64's HunyuanVideo builds its text
            # attention mask for a batch of 1), and a batch may not fit in memory after all: such a batch
            # runs one prompt per forward, as do the later ones. A failure of a single prompt is the user's.
            batches_run[0] = False
            log.info("this model did not run %d prompts as one batch (%s): one prompt per forward", n, str(e).splitlines()[0][:120])
            raise CannotBatch(str(e)) from e

    return forward_batch


MAX_BATCH = 8


def batch_size(model: Any, latent: torch.Tensor, cap: int = MAX_BATCH) -> int:
    """How many prompts one forward runs during extraction: as many as fit in the memory free on the
    model's device once the model is loaded, at most `cap`, at least 1.

    The activation memory of one forward on the probe latent [1, C, T, H, W] is ComfyUI's own estimate,
    model.memory_required (what the samplers use to decide how many conds to batch); it grows linearly
    with the batch. As in the samplers, a batch of B is taken when B * that * 1.5 < free memory (the 1.5
    leaves room for the text context, the output and the captured layer inputs, copied to the CPU).
    """
    comfy.model_management.load_models_gpu([model])
    one = float(model.model.memory_required([1, *latent.shape[1:]]))
    free = float(comfy.model_management.get_free_memory(model.load_device))
    if one <= 0:
        return cap
    return max(1, min(cap, int(free // (1.5 * one))))


# The first linear that reads the text conditioning, per family: its input width is the text width.
_TEXT_INPUT = {
    "wan": "text_embedding.0",
    "hunyuan_video": "txt_in.input_embedder",
    "ltxv": "caption_projection.linear_1",
    "mochi": "t5_yproj",
}


def _text_width(model: Any) -> int | None:
    try:
        layer = diffusion_module(model).get_submodule(_TEXT_INPUT[model_family(model)])
        return int(layer.weight.shape[1])
    except (KeyError, AttributeError):
        return None


def progress_bar() -> Callable[[int, int], None]:
    """A callback(done, total) that drives a ComfyUI progress bar (created at the first call)."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    return update


# --- the edit ---------------------------------------------------------------------------------

def check_fits(model: Any, rv: RefusalVector) -> None:
    """The vector was made for this model family and these layer widths, else a clear error."""
    shapes = {k[len(PREFIX):-len(".weight")]: tuple(v.shape) for k, v in model.model.state_dict().items()
              if k.startswith(PREFIX) and k.endswith(".weight")}
    check_vector_fits(rv, model_family(model), shapes)


def effective_weight(key_patches: dict, name: str) -> torch.Tensor:
    """A weight as this ModelPatcher would load it (base weight plus its earlier patches), float32."""
    key = f"{PREFIX}{name}.weight"
    (weight, convert), *earlier = key_patches[key]
    W = convert(weight.to(torch.float32, copy=True), inplace=True)
    return comfy.lora.calculate_weight(earlier, W, key) if earlier else W


def refusal_lora(model: Any, rv: RefusalVector, strength: float) -> dict[str, torch.Tensor]:
    """The edit of `model` as LoRA tensors ("diffusion_model.<layer>.lora_up.weight", ...), computed
    against the weights this model would load (LoRAs applied before are included)."""
    check_fits(model, rv)
    key_patches = model.get_key_patches(PREFIX)
    dtypes = {k: v.dtype for k, v in model.model.state_dict().items()}
    # the weight in its stored dtype (what ComfyUI loads), so the factors take that dtype too
    return lora_state_dict(lambda name: effective_weight(key_patches, name).to(dtypes[f"{PREFIX}{name}.weight"]), rv, strength)


def apply_refusal(model: Any, rv: RefusalVector, strength: float) -> Any:
    """A clone of `model` whose edit-site weights become W (I - strength Q diag(s) Q^T).

    The edit goes in as ComfyUI LoRA adapters (rank = number of concepts per layer), never as a
    dense copy, and the input model is never modified.
    """
    tensors = refusal_lora(model, rv, strength)
    m = model.clone()
    patches = {}
    for name in rv.bases():
        up, down = tensors[f"{LORA_PREFIX}{name}.lora_up.weight"], tensors[f"{LORA_PREFIX}{name}.lora_down.weight"]
        patches[f"{PREFIX}{name}.weight"] = LoRAAdapter(set(), (up, down, float(down.shape[0]), None, None, None))
    taken = set(m.add_patches(patches, 1.0))
    missing = sorted(set(patches) - taken)
    if missing:
        raise RefusalError(f"ComfyUI did not accept the edit for {missing[:3]}: the model does not have these weights")
    return m
