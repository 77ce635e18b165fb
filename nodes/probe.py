"""RefusalProbe: does the edit erase the concept on prompts it was not made from, and what else moves?"""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..refusal_core import prompts as P
from ..refusal_core.probe import ProbeResult, compare, record
from ..refusal_core.plot import probe_chart
from ..refusal_core.testbed.prompts import HELD_OUT_NEUTRAL, HELD_OUT_PAIRS
from ..refusal_core.types import PromptPair, PromptPairs, RefusalError
from . import comfy_bridge as bridge
from .extract import parse_sigmas
from .prompt_pairs import NO_FILE, PAIR_FILE_SUFFIXES
from .sockets import CATEGORY, RefusalVectorSocket


class RefusalProbe(io.ComfyNode):
    """Measures an edit on held-out prompts: leakage ||f'(u) - f'(s)|| / ||f(u) - f(s)|| (1 = untouched, 0 = erased) and
    collateral (how far neutral prompts move) at the model output and at every edited layer, and how much of each
    prompt's layer input lies along the refusal direction before and after."""

    @classmethod
    def define_schema(cls) -> io.Schema:
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
                RefusalVectorSocket.Input("refusal_vector", tooltip="The vector of the edit: its layers are probed."),
                io.String.Input("held_out_pairs", multiline=True, default="\n".join(f"{p.unsafe} | {p.safe}" for p in HELD_OUT_PAIRS),
                                tooltip="Pairs NOT used for extraction, one per line 'unsafe | safe': other phrasings of the concept."),
                io.String.Input("neutral_prompts", multiline=True, default="\n".join(HELD_OUT_NEUTRAL),
                                tooltip="Unrelated prompts, one per line: how far they move is the collateral."),
                io.String.Input("noise_levels", default="0.9,0.6,0.3", tooltip="Sigmas at which outputs are compared."),
                io.Int.Input("width", default=256, min=16, max=2048, step=16, tooltip="Probe latent width in pixels."),
                io.Int.Input("height", default=256, min=16, max=2048, step=16, tooltip="Probe latent height in pixels."),
                io.Int.Input("length", default=1, min=1, max=129, step=4, tooltip="Probe video length in frames."),
                io.Int.Input("seed", default=1, min=0, max=0xFFFFFFFF, tooltip="Seed of the shared probe noise latent."),
                io.Combo.Input("held_out_file", options=[NO_FILE] + bridge.input_files(PAIR_FILE_SUFFIXES), default=NO_FILE, optional=True,
                               tooltip="Optional .txt / .csv / .json file of held-out pairs in ComfyUI's input folder, used instead of the "
                                       "text above (a .json may carry its own neutral prompts)."),
            ],
            outputs=[
                io.String.Output(display_name="report", tooltip="Leakage and collateral per layer and at the output, projections on d."),
                io.Image.Output(display_name="chart", tooltip="Leakage per edited layer and at the output."),
            ],
        )

    @classmethod
    def execute(cls, original, edited, clip, refusal_vector, held_out_pairs: str, neutral_prompts: str, noise_levels: str,
                width: int, height: int, length: int, seed: int, held_out_file: str = NO_FILE) -> io.NodeOutput:
        neutral = P.parse_neutral(neutral_prompts)
        if held_out_file and held_out_file != NO_FILE:
            pairs, file_neutral = P.read_pairs_file(bridge.input_file_path(held_out_file))
            neutral = file_neutral or neutral
        else:
            pairs = P.parse_pair_lines(held_out_pairs)
        result = run_probe(original, edited, clip, refusal_vector, pairs, neutral, parse_sigmas(noise_levels), width, height, length, seed)
        report = result.report()
        return io.NodeOutput(report, torch.from_numpy(probe_chart(result))[None], ui=ui.PreviewText(report))


def run_probe(original, edited, clip, refusal_vector, pairs: list[PromptPair], neutral: list[str], sigmas: list[float],
              width: int, height: int, length: int, seed: int) -> ProbeResult:
    """The probe of the RefusalProbe node (also run by the evaluation command): every held-out prompt through both
    models on one seeded noise latent, compared at the output and at every edited layer."""
    if bridge.model_family(original) != bridge.model_family(edited):
        raise RefusalError("original and edited are different model families: connect the model before and after the edit")
    bridge.check_fits(original, refusal_vector)
    P.validate_pairs(pairs, neutral)
    prompts = PromptPairs.from_texts(pairs, neutral, lambda text: bridge.encode_prompt(clip, text))
    latent = bridge.probe_latent(original, width, height, length, seed)
    before = record(bridge.diffusion_module(original), bridge.make_forward(original), prompts, refusal_vector, latent, sigmas)
    after = record(bridge.diffusion_module(edited), bridge.make_forward(edited), prompts, refusal_vector, latent, sigmas)
    return compare(prompts, before, after, refusal_vector)
