"""ComfyUI V3 nodes: thin glue over refusal_core; ComfyUI internals live in the host package."""
