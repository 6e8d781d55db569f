"""`annrec experiment start|status|stop|promote` and `annrec versions pin|unpin`: the state
workers route by, written beside the model's LATEST (schemas/experiments.py, schemas/layout.py).

Every change is one atomic write of one small file (or object), which each worker reads with
LATEST and applies between two batches. A candidate is verified (manifest, sizes, sha256s) before
an experiment names it, as a rollback verifies its target: a damaged version is refused here with
the reason rather than refused by every worker.
"""

from __future__ import annotations

from typing import Protocol

from schemas.errors import AnnrecError
from schemas.experiments import CONTROL, Arm, Experiment, Pins
from schemas.manifest import Manifest


class StateTarget(Protocol):
    """What index_builder/targets.py's targets offer these commands."""

    def verify(self, version: str) -> Manifest: ...
    def set_latest(self, version: str, *, allow_older: bool = False) -> bool: ...
    def write_experiment(self, experiment: Experiment | None) -> None: ...
    def write_pins(self, pins: Pins) -> None: ...


class Storage(Protocol):
    def latest(self) -> str | None: ...
    def versions(self) -> list[str]: ...
    def experiment(self) -> Experiment | None: ...
    def pins(self) -> Pins: ...


def parse_candidate(text: str, index: int, count: int) -> tuple[str, str, float]:
    """`[ARM=]VERSION:PERCENT` -> (arm, version, share); arms are named `candidate` (one) or
    `candidate-N` unless named."""
    name, _, rest = text.rpartition("=") if "=" in text else ("", "", text)
    version, sep, percent = rest.rpartition(":")
    if not sep or not version:
        raise AnnrecError(f"--candidate {text!r}: expected [ARM=]VERSION:PERCENT (e.g. ...:10)")
    try:
        share = float(percent) / 100
    except ValueError as exc:
        raise AnnrecError(f"--candidate {text!r}: {percent!r} is not a percentage") from exc
    default = "candidate" if count == 1 else f"candidate-{index + 1}"
    return name or default, version, share


def start(
    target: StateTarget, storage: Storage, model: str, name: str, candidates: list[str]
) -> Experiment:
    """A new experiment: each candidate's share, the control (LATEST) the rest."""
    running = storage.experiment()
    if running is not None:
        raise AnnrecError(
            f"model {model} already runs experiment {running.name}: stop or promote it first"
        )
    latest = storage.latest()
    if latest is None:
        raise AnnrecError(f"model {model} has no LATEST: publish a version first")
    known = set(storage.versions())
    arms = []
    for i, text in enumerate(candidates):
        arm, version, share = parse_candidate(text, i, len(candidates))
        if version not in known:
            raise AnnrecError(f"model {model} has no version {version}")
        if version == latest:
            raise AnnrecError(f"{version} is LATEST already: the control arm serves it")
        target.verify(version)  # a damaged version is refused here, with the reason
        arms.append(Arm(name=arm, version=version, share=share))
    control = 1.0 - sum(a.share for a in arms)
    if control <= 0:
        raise AnnrecError("the candidates' shares leave nothing to the control arm (LATEST)")
    try:
        experiment = Experiment(
            name=name, model=model, arms=[Arm(name=CONTROL, share=control), *arms]
        )
    except ValueError as exc:
        raise AnnrecError(f"experiment {name}: {exc}") from exc
    target.write_experiment(experiment)
    return experiment


def stop(target: StateTarget, storage: Storage, model: str) -> Experiment:
    running = _running(storage, model)
    target.write_experiment(None)
    return running


def promote(target: StateTarget, storage: Storage, model: str, arm: str) -> str:
    """LATEST moves to the arm's version, then the experiment ends (in that order: in between,
    both arms serve the promoted version, never the old one to the arm's users). Promoting the
    control arm only ends the experiment. Returns the version LATEST names."""
    running = _running(storage, model)
    try:
        version = running.arm(arm).version
    except KeyError:
        names = ", ".join(a.name for a in running.arms)
        raise AnnrecError(f"experiment {running.name} has no arm {arm!r} (arms: {names})") from None
    if version is not None:
        target.verify(version)
        target.set_latest(version, allow_older=True)
    target.write_experiment(None)
    latest = storage.latest()
    assert latest is not None
    return latest


def pin(target: StateTarget, storage: Storage, model: str, version: str) -> Pins:
    if version not in storage.versions():
        raise AnnrecError(f"model {model} has no version {version}")
    target.verify(version)
    pins = storage.pins()
    if version not in pins.versions:
        pins = Pins(versions=[*pins.versions, version])
        target.write_pins(pins)
    return pins


def unpin(target: StateTarget, storage: Storage, model: str, version: str) -> Pins:
    pins = storage.pins()
    if version not in pins.versions:
        raise AnnrecError(f"model {model} has no pin on {version}")
    pins = Pins(versions=[v for v in pins.versions if v != version])
    target.write_pins(pins)
    return pins


def _running(storage: Storage, model: str) -> Experiment:
    running = storage.experiment()
    if running is None:
        raise AnnrecError(f"model {model} runs no experiment")
    return running
