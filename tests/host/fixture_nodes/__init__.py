"""Test-only ComfyUI nodes (never shipped): a MiniLM CLIP-like loader for graphs over HTTP, because
ComfyUI fixes Wan's text width at 4096 and a real umt5-xxl cannot be made tiny; a small CLIP vision."""
import os
import sys

_repo = os.environ.get("REFUSAL_PACK_REPO")
if _repo and _repo not in sys.path:
    sys.path.insert(0, _repo)

from tests.host.minilm_clip import MiniLMClip  # noqa: E402


class RefusalTestMiniLMCLIPLoader:
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"optional": {"width": ("INT", {"default": 4096, "min": 64, "max": 8192})}}

    def load(self, width=4096):
        return (MiniLMClip(width=width),)


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


NODE_CLASS_MAPPINGS = {"RefusalTestMiniLMCLIPLoader": RefusalTestMiniLMCLIPLoader, "RefusalTestTinyCLIPVisionLoader": RefusalTestTinyCLIPVisionLoader}
