"""Forward-hook capture of the inputs (or outputs) of chosen linear layers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .types import RefusalError


class AllCaptured(BaseException):
    """Raised by the last hook of a capture with stop=True once every named module has been read: the rest of
    the forward (later blocks, the head) would compute nothing the capture needs. A BaseException, so that no
    `except Exception` of the host on the way (a fallback of its own) mistakes it for a failure."""


@contextmanager
def capture_inputs(
    root: nn.Module, names: Sequence[str], outputs: bool = False, stop: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input (or, with outputs=True, the output) of each named submodule during the
    forwards run inside the block.

    Yields a dict that fills with {name: [B, L, d] float32 CPU tensor} (the last forward wins).
    stop: once every name is recorded, end the forward by raising AllCaptured (the caller catches it;
    see forwards.read_inputs).
    The hooks are removed on exit, also when the forward raises or is interrupted, so the model
    never keeps a hook of ours.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            try:
                module = root.get_submodule(name)
            except AttributeError:
                raise RefusalError(f"the model has no layer '{name}': the edit site does not fit this model") from None

            def keep(x: torch.Tensor, _name: str = name) -> None:
                captured[_name] = x.detach().to(device="cpu", dtype=torch.float32)
                if stop and len(captured) == len(names):
                    raise AllCaptured

            if outputs:
                handles.append(module.register_forward_hook(lambda _m, _args, out, _keep=keep: _keep(out)))
            else:
                handles.append(module.register_forward_pre_hook(lambda _m, args, _keep=keep: _keep(args[0])))
        yield captured
    finally:
        for h in handles:
            h.remove()
