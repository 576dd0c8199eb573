"""``pip install`` the package into a fresh virtual environment, then ``serve`` from an empty
directory: no config file anywhere, so the built-in default (shipped as package data) runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import httpx

from serving import ROOT, free_port, stop

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".ci-venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", "*.db*"
)


def _fresh_env(tmp_path: Path) -> Path:
    """A new virtual environment that sees this one's dependencies (no network to fetch
    them) through a path file, but not this checkout or its editable install."""
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return target


def _clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GATEWAY_CONFIG", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_installed_package_serves_the_built_in_default_from_an_empty_directory(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    target = _fresh_env(tmp_path)
    python = target / "bin" / "python"
    env = _clean_environ()
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(source)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    shutil.rmtree(source)  # nothing may be read from a checkout any more

    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import gateway.config, pathlib; print(pathlib.Path(gateway.config.__file__).parent)"],
        cwd=empty, capture_output=True, text=True, env=env, check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(target) and (Path(where) / "default.yaml").is_file()

    port = free_port()
    process = subprocess.Popen(
        [str(target / "bin" / "embedding-gateway"), "serve", "--port", str(port)],
        cwd=empty, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.communicate()
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve never became ready"
                time.sleep(0.05)
            response = client.post("/v1/embeddings", json={"model": "local-minilm", "input": ["hello", "world"]})
            assert response.status_code == 200, response.text
            assert [len(d["embedding"]) for d in response.json()["data"]] == [384, 384]
            assert client.get("/v1/models/all-MiniLM-L6-v2").json()["dimensions"] == 384
    finally:
        _, err = stop(process)
    first = err.splitlines()[0]
    assert "built-in default config" in first and str(empty) in first, err[:2000]
    assert (empty / "gateway-usage.db").exists()  # the ledger, in the working directory


def test_embed_uses_the_built_in_default_too(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "embed", "--model", "local-minilm", "hello"],
        cwd=tmp_path, capture_output=True, text=True, env={**_clean_environ(), "PYTHONPATH": str(ROOT)}, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "built-in default config" in done.stderr.splitlines()[0]
    assert '"model": "local-minilm"' in done.stdout
