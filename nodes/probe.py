"""RefusalProbe: does the edit erase the concept on prompts it was not made from, and what else moves?"""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..refusal_core import defaults
from ..refusal_core.edit import RefusalEdit
from ..refusal_core.presets import held_out, pairs_text
from ..refusal_core.probe import ProbeResult, compare, record
from ..refusal_core.prompts import parse_prompt_lines, parse_sigmas, validate_pairs
from ..refusal_core.report.plot import probe_chart
from ..refusal_core.types import PromptPair, PromptPairs, RefusalError
from . import widgets
from .host import encode, forward, models, patch, paths
from .prompt_pairs import NO_FILE, file_fingerprint, pairs_file_input, read_pairs
from .sockets import CATEGORY, RefusalEditSocket, need_edit

# A first-release workflow saved a "control after generate" value after the seed; the seed no longer has
# one, so that value lands in the next widget, held_out_file: it means no file.
STALE_SEED_CONTROL = ("fixed", "increment", "decrement", "randomize")


class RefusalProbe(io.ComfyNode):
    """Measures an edit on held-out prompts: leakage ||f'(u) - f'(s)|| / ||f(u) - f(s)|| (1 = untouched, 0 = erased) and
    collateral (how far neutral prompts move) at the model output and at every edited layer, and how much of each
    prompt's layer input lies along the refusal direction before and after."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        pairs, neutral = held_out()
        file_input = pairs_file_input(
            "Optional .txt / .csv / .json file of held-out pairs in ComfyUI's input folder, used instead of the "
            "text above (a .json may carry its own neutral prompts).",
            "held_out_file",
        )
        return io.Schema(
            node_id="RefusalProbe",
            display_name="Refusal Probe (leakage / collateral)",
            category=CATEGORY,
            description=cls.__doc__,
            is_output_node=True,
            inputs=[
                io.Model.Input("original", tooltip="The model before the edit."),
                io.Model.Input("edited", tooltip="The model after Apply Refusal To Model (or a LoRA)."),
                io.Clip.Input("clip", tooltip="The text encoder of the model."),
                RefusalEditSocket.Input("refusal_vector", tooltip="The edit: its layers are probed."),
                io.String.Input(
                    "held_out_pairs",
                    multiline=True,
                    default=pairs_text(pairs),
                    tooltip="Pairs NOT used for extraction, one per line 'unsafe | safe': other phrasings of the concept.",
                ),
                io.String.Input(
                    "neutral_prompts",
                    multiline=True,
                    default="\n".join(neutral),
                    tooltip="Unrelated prompts, one per line: how far they move is the collateral.",
                ),
                widgets.noise_levels("Sigmas at which outputs are compared."),
                *widgets.probe_size(),
                widgets.seed(defaults.PROBE_SEED, "Seed of the shared probe noise latent (another than extraction's)."),
                file_input,
            ],
            outputs=[
                io.String.Output(
                    display_name="report",
                    tooltip="Leakage and collateral per layer and at the output, projections on d.",
                ),
                io.Image.Output(display_name="chart", tooltip="Leakage per edited layer and at the output."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, held_out_file: str = NO_FILE, **_) -> str:
        return file_fingerprint(held_out_file)

    @classmethod
    def validate_inputs(cls, noise_levels: str | None = None, held_out_file: str | None = None) -> bool | str:
        """Reported before anything runs: a bad noise level, a file not in the input folder. (Naming
        held_out_file here takes its list check over from ComfyUI, to let first-release workflows in.)"""
        file = None if held_out_file in (NO_FILE, *STALE_SEED_CONTROL) else held_out_file
        return widgets.first_problem((parse_sigmas, noise_levels), (paths.input_file_path, file))

    @classmethod
    def execute(
        cls,
        original,
        edited,
        clip,
        refusal_vector,
        held_out_pairs: str,
        neutral_prompts: str,
        noise_levels: str,
        width: int,
        height: int,
        length: int,
        seed: int,
        held_out_file: str = NO_FILE,
    ) -> io.NodeOutput:
        if held_out_file in STALE_SEED_CONTROL:
            held_out_file = NO_FILE
        pairs, neutral = read_pairs(held_out_pairs, held_out_file, parse_prompt_lines(neutral_prompts))
        result = run_probe(
            original,
            edited,
            clip,
            need_edit(refusal_vector),
            pairs,
            neutral,
            parse_sigmas(noise_levels),
            width,
            height,
            length,
            seed,
        )
        report = result.report()
        return io.NodeOutput(report, torch.from_numpy(probe_chart(result))[None], ui=ui.PreviewText(report))


def run_probe(
    original,
    edited,
    clip,
    edit: RefusalEdit,
    pairs: list[PromptPair],
    neutral: list[str],
    sigmas: list[float],
    width: int,
    height: int,
    length: int,
    seed: int,
) -> ProbeResult:
    """The probe of the RefusalProbe node (also run by the evaluation command): every held-out prompt through both
    models on one seeded noise latent, compared at the output and at every edited layer."""
    if models.model_family(original) != models.model_family(edited):
        raise RefusalError(
            "original and edited are different model families: connect the model before and after the edit"
        )
    patch.check_fits(original, edit)
    validate_pairs(pairs, neutral)
    prompts = PromptPairs.from_texts(pairs, neutral, lambda text: encode.encode_prompt(clip, text))
    latent = models.probe_latent(original, width, height, length, seed)
    before = record(models.diffusion_module(original), forward.make_forward(original), prompts, edit, latent, sigmas)
    after = record(models.diffusion_module(edited), forward.make_forward(edited), prompts, edit, latent, sigmas)
    return compare(prompts, before, after, edit)
