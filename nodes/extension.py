"""The ComfyExtension that lists the pack's nodes."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .apply import ApplyRefusalToModel
from .combine import CombineRefusalVectors
from .extract import ExtractRefusalVector
from .factorize import LowRankFactorize
from .files import LoadRefusalVector, SaveRefusalVector
from .frames import RefusalFrameCompare
from .host import paths
from .image_pairs import AddImagesToPromptPairs
from .probe import RefusalProbe
from .prompt_pairs import PromptPairLoader
from .save_lora import SaveRefusalAsLoRA


class RefusalExtension(ComfyExtension):
    async def on_load(self) -> None:
        paths.register_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        paths.register_folders()
        return [
            PromptPairLoader,
            ExtractRefusalVector,
            LowRankFactorize,
            ApplyRefusalToModel,
            SaveRefusalVector,
            LoadRefusalVector,
            AddImagesToPromptPairs,
            SaveRefusalAsLoRA,
            CombineRefusalVectors,
            RefusalProbe,
            RefusalFrameCompare,
        ]
