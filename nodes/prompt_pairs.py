"""PromptPairLoader: texts of unsafe / safe pairs and neutral prompts -> PROMPT_PAIRS."""
from __future__ import annotations

from comfy_api.latest import io

from ..refusal_core import prompts as P
from ..refusal_core.presets import CUSTOM, load_preset, preset_names
from ..refusal_core.types import PromptPairs, RefusalError
from . import comfy_bridge as bridge
from .sockets import CATEGORY, PromptPairsSocket

NO_FILE = "(none)"
PAIR_FILE_SUFFIXES = (".txt", ".csv", ".json")


class PromptPairLoader(io.ComfyNode):
    """Prompt pairs that differ only by the concept to erase ("a nude woman on a beach | a woman on a beach"),
    plus neutral prompts for the contrastive factorization, encoded exactly as CLIPTextEncode does."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PromptPairLoader",
            display_name="Prompt Pairs (unsafe | safe)",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model to edit (for Wan: umt5_xxl loaded as type wan)."),
                io.String.Input(
                    "pairs",
                    multiline=True,
                    default=P.DEFAULT_PAIRS,
                    tooltip="One pair per line: 'unsafe prompt | safe prompt'. The two sides should differ only by the concept. About 5 pairs.",
                ),
                io.String.Input(
                    "neutral_prompts",
                    multiline=True,
                    default=P.DEFAULT_NEUTRAL,
                    tooltip="Unrelated prompts (animals, landscapes, objects), one per line: cPCA removes what they share with the concept.",
                ),
                io.Combo.Input(
                    "pairs_file",
                    options=[NO_FILE] + bridge.input_files(PAIR_FILE_SUFFIXES),
                    default=NO_FILE,
                    optional=True,
                    tooltip="Optional .txt / .csv / .json file in ComfyUI's input folder; its pairs are used instead of the text above.",
                ),
                io.Combo.Input(
                    "preset",
                    options=[CUSTOM] + preset_names(),
                    default=CUSTOM,
                    optional=True,
                    tooltip="Ready-made pairs and neutral prompts instead of the texts above: nudity, graphic_violence, "
                    "copyrighted_character, trademark, public_figure (the last three need preset_subject).",
                ),
                io.String.Input(
                    "preset_subject",
                    default="",
                    optional=True,
                    tooltip="For the character, trademark and public-figure presets: the name to erase (e.g. the character's name).",
                ),
            ],
            outputs=[PromptPairsSocket.Output(display_name="prompt_pairs", tooltip="The pairs and neutral prompts with their conditioning.")],
        )

    @classmethod
    def execute(cls, clip, pairs: str, neutral_prompts: str, pairs_file: str = NO_FILE, preset: str = CUSTOM,
                preset_subject: str = "") -> io.NodeOutput:
        neutral = P.parse_neutral(neutral_prompts)
        if preset and preset != CUSTOM:
            if pairs_file and pairs_file != NO_FILE:
                raise RefusalError("choose either a preset or a pairs file, not both")
            parsed, neutral = load_preset(preset, preset_subject)
        elif pairs_file and pairs_file != NO_FILE:
            parsed, file_neutral = P.read_pairs_file(bridge.input_file_path(pairs_file))
            neutral = file_neutral or neutral
        else:
            parsed = P.parse_pair_lines(pairs)
        P.validate_pairs(parsed, neutral)
        return io.NodeOutput(PromptPairs.from_texts(parsed, neutral, lambda text: bridge.encode_prompt(clip, text)))
