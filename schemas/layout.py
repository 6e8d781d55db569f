"""The storage layout both sides agree on (the builder writes it, workers read it).

<storage>/versions/<version>/   one complete, immutable version (manifest.json + files)
<storage>/tmp/<version>/        a version being written; never read by workers
<storage>/LATEST                the name of the version workers should serve
<storage>/EXPERIMENT            the model's running experiment, when there is one (JSON)
<storage>/PINNED                versions `annrec versions pin` keeps held and out of gc (JSON)

That is the model `default`. Every other model has the same layout under its own root,
<storage>/models/<model>/ (its own catalogue, dimension, attributes and quality report). The
single-model layout of earlier releases is therefore the model `default` as it is: no migration
(docs/operations.md#several-models).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from schemas.errors import AnnrecError
from schemas.experiments import Experiment, Pins
from schemas.manifest import DEFAULT_MODEL as DEFAULT_MODEL  # the storage root's own versions
from schemas.manifest import is_model_name, is_version_name

VERSIONS = "versions"
STAGING = "tmp"
LATEST = "LATEST"
EXPERIMENT = "EXPERIMENT"
PINNED = "PINNED"
MODELS = "models"


def model_root(storage: Path, model: str) -> Path:
    """The root of a model's versions, LATEST and experiment; `default` is the storage root."""
    return storage / model_path(model) if model_path(model) else storage


def model_path(model: str) -> str:
    """A model's root relative to the storage root ('' for `default`); the name is checked."""
    if not is_model_name(model):
        raise AnnrecError(
            f"{model!r} is not a model name (lower-case letters, digits, '-', '_'; at most 63)"
        )
    return "" if model == DEFAULT_MODEL else f"{MODELS}/{model}"


def list_models(storage: Path) -> list[str]:
    """Models with at least one version or a LATEST; `default` first."""
    found = [DEFAULT_MODEL] if (storage / LATEST).exists() or list_versions(storage) else []
    root = storage / MODELS
    if root.is_dir():
        found += sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and is_model_name(p.name) and p.name != DEFAULT_MODEL
        )
    return found


def version_dir(storage: Path, version: str) -> Path:
    """The directory of a version; the name is checked so it cannot escape the storage root."""
    if not is_version_name(version):
        raise AnnrecError(f"{version!r} is not a version name")
    return storage / VERSIONS / version


def read_latest(storage: Path) -> str | None:
    """The version LATEST names, or None when nothing was published yet."""
    try:
        name = (storage / LATEST).read_text().strip()
    except FileNotFoundError:
        return None
    if not is_version_name(name):
        raise AnnrecError(f"{storage / LATEST} holds {name!r}, which is not a version name")
    return name


def list_versions(storage: Path) -> list[str]:
    root = storage / VERSIONS
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_version_name(p.name))


def parse_experiment(raw: bytes | str, where: str) -> Experiment:
    try:
        return Experiment.model_validate_json(raw)
    except ValidationError as exc:
        raise AnnrecError(f"{where} is not a valid experiment: {exc}") from exc


def parse_pins(raw: bytes | str, where: str) -> Pins:
    try:
        return Pins.model_validate_json(raw)
    except ValidationError as exc:
        raise AnnrecError(f"{where} is not a valid list of pinned versions: {exc}") from exc


def read_experiment(storage: Path) -> Experiment | None:
    """The model's running experiment (storage: the model's root), None when none runs."""
    path = storage / EXPERIMENT
    try:
        return parse_experiment(path.read_bytes(), str(path))
    except FileNotFoundError:
        return None


def read_pins(storage: Path) -> Pins:
    path = storage / PINNED
    try:
        return parse_pins(path.read_bytes(), str(path))
    except FileNotFoundError:
        return Pins()
