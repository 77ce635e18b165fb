"""PromptPairLoader: texts of unsafe / safe pairs, neutral prompts and keep prompts -> PROMPT_PAIRS."""

from __future__ import annotations

import hashlib

from comfy_api.latest import io

from ..refusal_core import defaults
from ..refusal_core.ordinary import ordinary_text
from ..refusal_core.presets import CUSTOM, default_texts, load_preset, preset_keep, preset_names
from ..refusal_core.prompts import (
    MAX_PAIRS_FILE_BYTES,
    parse_pair_lines,
    parse_prompt_lines,
    read_pairs_file,
    validate_pairs,
)
from ..refusal_core.types import PromptPairs, RefusalError
from .host import encode, forward, paths
from .sockets import CATEGORY, PromptPairsSocket

NO_FILE = "(none)"
PAIR_FILE_SUFFIXES = (".txt", ".csv", ".json")


def file_fingerprint(name: str | None) -> str:
    """The content hash of a file in the input folder (ComfyUI re-runs the node when it changes)."""
    if not name or name == NO_FILE:
        return ""
    try:
        with open(paths.input_file_path(name), "rb") as f:
            return hashlib.sha256(f.read(MAX_PAIRS_FILE_BYTES + 1)).hexdigest()
    except (RefusalError, OSError):
        return f"missing:{name}"  # the node itself reports it


def pairs_file_input(tooltip: str, name: str = "pairs_file") -> io.Combo.Input:
    return io.Combo.Input(
        name, options=[NO_FILE] + paths.input_files(PAIR_FILE_SUFFIXES), default=NO_FILE, optional=True, tooltip=tooltip
    )


def read_pairs(text: str, file: str, neutral: list[str]) -> tuple[list, list[str]]:
    """The pairs of `file` in the input folder when one is chosen (with its own neutral prompts, if it has
    them), else of `text`."""
    if file and file != NO_FILE:
        pairs, file_neutral = read_pairs_file(paths.input_file_path(file))
        return pairs, file_neutral or neutral
    return parse_pair_lines(text), neutral


class PromptPairLoader(io.ComfyNode):
    """Prompt pairs that differ only by the concept to erase ("a nude woman on a beach | a woman on a beach"),
    plus neutral prompts for the contrastive factorization, encoded exactly as CLIPTextEncode does."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        default_pairs, default_neutral = default_texts()
        return io.Schema(
            node_id="PromptPairLoader",
            display_name="Prompt Pairs (unsafe | safe)",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                io.Clip.Input(
                    "clip", tooltip="The text encoder of the model to edit (for Wan: umt5_xxl loaded as type wan)."
                ),
                io.String.Input(
                    "pairs",
                    multiline=True,
                    default=default_pairs,
                    tooltip="One pair per line: 'unsafe prompt | safe prompt'. The two sides should differ only by the concept. About 5 pairs.",
                ),
                io.String.Input(
                    "neutral_prompts",
                    multiline=True,
                    default=default_neutral,
                    tooltip="Unrelated prompts (animals, landscapes, objects), one per line: cPCA removes what they share with the concept.",
                ),
                pairs_file_input(
                    "Optional .txt / .csv / .json file in ComfyUI's input folder; its pairs are used instead of the text above."
                ),
                io.Combo.Input(
                    "preset",
                    options=[CUSTOM] + preset_names(),
                    default=CUSTOM,
                    optional=True,
                    tooltip="Ready-made pairs and neutral prompts (for characters also keep prompts) instead of the texts above: "
                    "nudity, graphic_violence, copyrighted_character, trademark, public_figure (the last three need preset_subject).",
                ),
                io.String.Input(
                    "preset_subject",
                    default="",
                    optional=True,
                    tooltip="For the character, trademark and public-figure presets: the name to erase (e.g. the character's name).",
                ),
                io.String.Input(
                    "keep_prompts",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Optional look-alikes the edit must leave alone, one per line (e.g. 'a cartoon mouse' while erasing a "
                    "named mouse character): each layer's direction is taken orthogonal to them. Matters most when several "
                    "characters that share a word are erased together. The copyrighted_character preset brings its own "
                    "(a cartoon mouse, duck and rabbit); these are added to them.",
                ),
                io.Boolean.Input(
                    "keep_ordinary_text",
                    default=True,
                    optional=True,
                    tooltip=f"Also read the pack's {len(ordinary_text())} ordinary phrases ('a dog walking in a park') and take "
                    f"each direction off their {defaults.ORDINARY_RANK} leading directions, so that the edit moves what "
                    "the concept holds and not what every prompt shares (less drift); such an edit carries strength "
                    f"{defaults.ORDINARY_STRENGTH:g} to make up for what that takes out of it. Off: the paper's edit.",
                ),
            ],
            outputs=[
                PromptPairsSocket.Output(
                    display_name="prompt_pairs", tooltip="The pairs and neutral prompts with their conditioning."
                )
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, pairs_file: str = NO_FILE, **_) -> str:
        return file_fingerprint(pairs_file)

    @classmethod
    def execute(
        cls,
        clip,
        pairs: str,
        neutral_prompts: str,
        pairs_file: str = NO_FILE,
        preset: str = CUSTOM,
        preset_subject: str = "",
        keep_prompts: str = "",
        keep_ordinary_text: bool = True,
    ) -> io.NodeOutput:
        neutral = parse_prompt_lines(neutral_prompts)
        keep = parse_prompt_lines(keep_prompts or "")
        if preset and preset != CUSTOM:
            if pairs_file and pairs_file != NO_FILE:
                raise RefusalError("choose either a preset or a pairs file, not both")
            parsed, neutral = load_preset(preset, preset_subject)
            keep = list(dict.fromkeys(preset_keep(preset) + keep))  # the preset's look-alikes, then the typed ones
        else:
            parsed, neutral = read_pairs(pairs, pairs_file, neutral)
        validate_pairs(parsed, neutral, keep)
        return io.NodeOutput(
            PromptPairs.from_texts(
                parsed,
                neutral,
                lambda text: encode.encode_prompt(clip, text),
                keep,
                ordinary_text() if keep_ordinary_text else (),
                progress=forward.progress_bar(),
            )
        )
