"""Pure-torch core of the low-rank refusal vector method (arXiv 2506.07891).

Nothing in this package imports ComfyUI: it works on torch modules, tensors and
callables, so it runs and is tested anywhere torch runs.
"""

__version__ = "0.4.0"
