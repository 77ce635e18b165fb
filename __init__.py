"""Refusal-vector concept erasure for ComfyUI video models (arXiv 2506.07891).

Importing this package does no work: ComfyUI calls comfy_entrypoint() to get the
nodes; outside ComfyUI the pure-torch core is refusal_core.
"""

# Served at /extensions/<this folder>/: the frontend reads each node's help from docs/<node id>.md there.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes.extension import RefusalExtension

    return RefusalExtension()
