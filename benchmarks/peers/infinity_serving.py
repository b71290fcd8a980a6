"""Infinity (`infinity-emb`, an existing embedding server) serving an exported NeoBERT folder on 127.0.0.1,
for the serving test and `serve_load.py`. Infinity runs in its own environment (`make serve-env` builds
.venv-serve; NEOBERT_SERVE_PYTHON names another Python that has it), because its pins (numpy<2, click<8.2)
do not fit the main one. The folder's own remote code runs there: neobert is not importable in it.

Infinity 0.0.78 with transformers 5: its token counter calls the tokenizer's `batch_encode_plus`, which
transformers 5 removed, and that counter runs in the start-up warm-up and, by default, for every request.
The two documented flags in SERVER_FLAGS keep it out (no warm-up; lengths counted in characters), and the
embeddings path itself (sentence-transformers' tokenize + forward + pooling) is untouched by them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVE_PYTHON_VARIABLE = "NEOBERT_SERVE_PYTHON"
DEFAULT_SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
SERVER_FLAGS = ("--engine", "torch", "--device", "cpu", "--trust-remote-code", "--no-vector-disk-cache")
TRANSFORMERS_5_FLAGS = ("--no-model-warmup", "--no-lengths-via-tokenize")
MODEL_NAME = "neobert"


def serve_python() -> tuple[Path | None, str]:
    """The Python that has Infinity, or None and why not (for a skip message)."""
    named = os.environ.get(SERVE_PYTHON_VARIABLE)
    python = Path(named) if named else DEFAULT_SERVE_PYTHON
    if not python.is_file():
        source = f"{SERVE_PYTHON_VARIABLE}={named}" if named else str(DEFAULT_SERVE_PYTHON.relative_to(ROOT))
        return None, f"no serving environment ({source} not found): run `make serve-env`"
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('infinity_emb') is None)"
    if subprocess.run([str(python), "-c", probe], capture_output=True, timeout=60).returncode != 0:
        return None, f"{python} has no infinity_emb: run `make serve-env`"
    return python, ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class InfinityServer:
    """`with InfinityServer(python, folder) as server:` starts `infinity_emb v2` on a free local port, waits
    until /models answers (at most `ready_timeout` seconds; the server's log in the error otherwise) and
    stops it on exit. `threads` caps the server's torch threads (the machine is shared)."""

    def __init__(self, python: Path, folder: Path, threads: int = 1, ready_timeout: float = 180.0):
        self.python, self.folder, self.threads, self.ready_timeout = python, Path(folder), threads, ready_timeout
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="neobert-infinity-")
        self.log_path = Path(self._scratch.name) / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        model = ["--model-id", str(self.folder), "--served-model-name", MODEL_NAME]
        where = ["--host", "127.0.0.1", "--port", str(self.port)]
        return [str(self.python), "-m", "infinity_emb.cli", "v2", *model, *where, *SERVER_FLAGS, *TRANSFORMERS_5_FLAGS]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        threads = str(self.threads)
        scratch = self._scratch.name
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
        # The folder's remote code is copied into the modules cache: a scratch one, not the user's.
        env.update(INFINITY_ANONYMOUS_USAGE_STATS="0", HF_MODULES_CACHE=str(Path(scratch) / "modules"))
        return env

    def __enter__(self) -> InfinityServer:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(), cwd=self._scratch.name
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"infinity exited with {self.process.returncode} before answering:\n{self.log()}")
            try:
                status, _ = request(self.url, "GET", "/models", timeout=5)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"infinity did not answer within {self.ready_timeout:.0f} s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self._scratch.cleanup()


def request(
    url: str, method: str, path: str, body: bytes | None = None, timeout: float = 60.0, connection=None
) -> tuple[int, object]:
    """One HTTP request; (status, the JSON body or the raw bytes when it is not JSON). `connection`: an open
    http.client connection to reuse (keep-alive), else a fresh one for this request."""
    own = connection is None
    if own:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        if own:
            connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


def embeddings_request(texts: str | list[str]) -> bytes:
    """An OpenAI `/embeddings` request body."""
    return json.dumps({"model": MODEL_NAME, "input": texts}).encode()


def vectors(answer: dict) -> list[list[float]]:
    """The embeddings of an OpenAI `/embeddings` answer, in input order (`index`), whatever order they came in."""
    return [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]
