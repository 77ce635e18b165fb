import pytest

from tests.host import comfy_host

WAN = "tiny_wan_t2v.safetensors"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One headless ComfyUI for the HTTP tests, with this pack and the test fixture nodes."""
    if comfy_host.missing_reason():
        pytest.skip(comfy_host.missing_reason())
    from tests.host.server import ComfyServer

    base = tmp_path_factory.mktemp("comfy_base")
    srv = ComfyServer(base)
    from tests.host import tiny_models

    tiny_models.testbed_wan(base / "models" / "diffusion_models" / WAN)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def nodes():
    """The pack's node classes, loaded as ComfyUI loads them."""
    if comfy_host.missing_reason():
        pytest.skip(comfy_host.missing_reason())
    return comfy_host.pack_nodes()


@pytest.fixture()
def loras(tmp_path, monkeypatch):
    """ComfyUI's loras folder pointed at a fresh directory (for Save Refusal As LoRA and the stock loader)."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return tmp_path
