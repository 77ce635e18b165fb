"""The model's own forward: apply_model on conditioning built through its extra_conds, one prompt or a
batch of prompts per call, and how many prompts fit in one call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import comfy.model_management
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils
import torch

from ...refusal_core.defaults import MAX_BATCH
from ...refusal_core.forwards import CannotBatch
from ...refusal_core.types import RefusalError
from .models import text_width


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
    width_read = text_width(model)

    def inputs(conditioning: Any, noise: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        cond = _first_cond(conditioning)
        width = cond[0][0].shape[-1]
        if width_read is not None and width != width_read:
            raise RefusalError(
                f"the conditioning is {width} wide but this model reads text {width_read} wide: "
                "connect the CLIP that belongs to the model (for Wan: umt5_xxl, type wan)"
            )
        x0 = noise.to(device)
        s = torch.tensor([sigma], device=device, dtype=torch.float32)
        x = base.model_sampling.noise_scaling(s, x0, torch.zeros_like(x0))
        conds = comfy.sampler_helpers.convert_cond(cond)
        conds = comfy.samplers.encode_model_conds(base.extra_conds, conds, x, device, "positive")
        model_conds = {
            k: v.process_cond(batch_size=1, device=device, area=None) for k, v in conds[0]["model_conds"].items()
        }
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
            batches_run[0] = False  # the extraction names this fallback in its report and log
            raise CannotBatch(
                f"this model did not run {n} prompts as one batch ({str(e).splitlines()[0][:120]})", failed=True
            ) from e

    return forward_batch


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


def progress_bar() -> Callable[[int, int], None]:
    """A callback(done, total) that drives a ComfyUI progress bar (created at the first call)."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    return update
