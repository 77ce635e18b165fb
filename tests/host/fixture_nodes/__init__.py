"""Test-only ComfyUI nodes (never shipped): a MiniLM CLIP-like loader for graphs over HTTP, because
ComfyUI fixes Wan's text width at 4096 and a real umt5-xxl cannot be made tiny; a small CLIP vision."""

import importlib.util
import sys
from pathlib import Path


def _register_by_location(name: str) -> None:
    """ComfyUI's own tests/ folder comes first on the server's path and shadows this repository's, and the testbed is
    not installed (it runs from the repository's root): register ours by their location (this folder, through the
    custom_nodes link, is tests/host/fixture_nodes)."""
    folder = Path(__file__).resolve().parents[3] / name
    if getattr(sys.modules.get(name), "__file__", None) != str(folder / "__init__.py"):
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])


_register_by_location("tests")
_register_by_location("testbed")
_register_by_location("scripts")
from tests.host.minilm_clip import MiniLMClip  # noqa: E402


class RefusalTestMiniLMCLIPLoader:
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "optional": {
                "width": ("INT", {"default": 4096, "min": 64, "max": 8192}),
                "pad_to": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 4096,
                        "tooltip": "zero rows up to this length (umt5: 512); 0: none",
                    },
                ),
            }
        }

    def load(self, width=4096, pad_to=0):
        return (MiniLMClip(width=width, pad_to=pad_to or None),)


class RefusalTestTinyCLIPVisionLoader:
    """ComfyUI's ClipVisionModel at ViT-H's width with 2 layers (a random ViT-H takes ~23 s per image on CPU)."""

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        import tempfile
        from pathlib import Path

        from tests.host.tiny_models import clip_vision

        return (clip_vision(Path(tempfile.mkdtemp(prefix="tiny-clip-vision-"))),)


class RefusalTestResidual:
    """Per edited layer ||W' d - (1 - s) W d|| / ||W d||, on the weights as the forward computes with them: W' of
    `edited` (the edit applied at strength 1), W of `reference` (the model before the edit), d each direction of the
    edit and s its strength: how far W' is from W (I - s d d^T). An output node: its ui text is JSON."""

    RETURN_TYPES = ()
    FUNCTION = "measure"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"edited": ("MODEL",), "reference": ("MODEL",), "refusal_vector": ("REFUSAL_VECTOR",)}}

    def measure(self, edited, reference, refusal_vector):
        import json

        from tests.host.comfy_host import computed_weights, edit_residual

        names = list(refusal_vector.bases())
        after, before = computed_weights(edited, names), computed_weights(reference, names)
        ratios = {}
        for name, (Q, s) in refusal_vector.bases().items():
            ratios[name] = max(edit_residual(after[name], before[name], d, float(si)) for d, si in zip(Q, s))
        return {"ui": {"text": [json.dumps(ratios)]}}


NODE_CLASS_MAPPINGS = {
    "RefusalTestMiniLMCLIPLoader": RefusalTestMiniLMCLIPLoader,
    "RefusalTestTinyCLIPVisionLoader": RefusalTestTinyCLIPVisionLoader,
    "RefusalTestResidual": RefusalTestResidual,
}
