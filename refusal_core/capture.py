"""Forward-hook capture of the inputs of chosen linear layers."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from .types import RefusalError


@contextmanager
def capture_inputs(root: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input of each named submodule during the forwards run inside the block.

    Yields a dict that fills with {name: [B, L, d_in] float32 CPU tensor} (the last
    forward wins). The hooks are removed on exit, also when the forward raises or
    is interrupted, so the model never keeps a hook of ours.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            try:
                module = root.get_submodule(name)
            except AttributeError:
                raise RefusalError(f"the model has no layer '{name}': the edit site does not fit this model") from None

            def hook(_module: nn.Module, args: tuple, _name: str = name) -> None:
                x = args[0]
                captured[_name] = x.detach().to(device="cpu", dtype=torch.float32)

            handles.append(module.register_forward_pre_hook(hook))
        yield captured
    finally:
        for h in handles:
            h.remove()
