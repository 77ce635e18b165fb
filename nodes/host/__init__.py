"""The only code that touches ComfyUI internals, one module per job: paths (model and input folders),
models (family, loading files, probe latents), encode (text as CLIPTextEncode does it), forward (the
model's own apply_model, batching), patch (the edit as LoRA patches on a clone), images (image pairs)."""
