"""A headless ComfyUI server in a temporary base directory, with this pack in custom_nodes."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.host import comfy_host


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path, cpu: bool = True):
        """cpu: ComfyUI's --cpu (every test); False lets it take the GPU (bench/full_size.py --gpu)."""
        self.base, self.cpu = base, cpu
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "server.log"
        for sub in ("custom_nodes", "models/diffusion_models", "input", "output", "user"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "custom_nodes" / comfy_host.PACK).symlink_to(comfy_host.REPO, target_is_directory=True)
        fixture = comfy_host.REPO / "tests" / "host" / "fixture_nodes"
        (base / "custom_nodes" / "refusal_test_fixture_nodes").symlink_to(fixture, target_is_directory=True)
        gguf = comfy_host.comfy_path() / "custom_nodes" / "ComfyUI-GGUF"  # provisioned beside the host (UnetLoaderGGUF)
        if gguf.is_dir():
            (base / "custom_nodes" / "ComfyUI-GGUF").symlink_to(gguf, target_is_directory=True)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> ComfyServer:
        args = [
            sys.executable,
            "main.py",
            *(["--cpu"] if self.cpu else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--base-directory",
            str(self.base),
        ]
        if importlib.util.find_spec("comfyui_frontend_package") is None:
            (self.base / "frontend").mkdir(exist_ok=True)
            args += ["--front-end-root", str(self.base / "frontend")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            args, cwd=comfy_host.comfy_path(), env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, json.dumps(data).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, graph: dict, timeout: float = 300.0) -> dict:
        """Queue a graph and wait for its history entry; returns it (status and outputs)."""
        code, body = self.post("/prompt", {"prompt": graph})
        if code != 200:
            return {"rejected": body}
        pid = body["prompt_id"]
        if body.get("node_errors"):  # some output nodes failed validation; the others ran: report them as rejected
            self.wait(pid, timeout)
            return {"rejected": body}
        return self.wait(pid, timeout)

    def wait(self, pid: str, timeout: float = 300.0) -> dict:
        """The history entry of a queued prompt once it finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                if hist[pid]["status"].get("status_str") in ("success", "error"):
                    return hist[pid]
            time.sleep(0.3)
        raise TimeoutError(f"graph {pid} did not finish in {timeout} s:\n{self.log.read_text()[-3000:]}")
