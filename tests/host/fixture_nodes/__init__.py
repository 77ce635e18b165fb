"""Test-only ComfyUI nodes (never shipped): a MiniLM CLIP-like loader for graphs over HTTP,
because ComfyUI fixes Wan's text width at 4096 and a real umt5-xxl cannot be made tiny."""
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


NODE_CLASS_MAPPINGS = {"RefusalTestMiniLMCLIPLoader": RefusalTestMiniLMCLIPLoader}
