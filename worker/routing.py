"""Which version answers a request: its model, its pin, or the arm of the model's experiment.

Pure over the snapshot a batch is answered with (worker/index_store.py's Serving): the same
request gets the same route on every worker holding the same snapshot, since an experiment's
assignment is a stable hash of the user (schemas/experiments.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.index_store import LoadedVersion, NotServed, Serving, unknown_model
from worker.parse import AnyRequest

PinLoader = Callable[[str, str], LoadedVersion]  # (model, version) -> loaded, or NotServed


@dataclass(frozen=True)
class Route:
    version: LoadedVersion
    model: str
    variant: str | None = None  # the experiment arm, when one assigned the request
    pinned: bool = False

    @property
    def cache_tag(self) -> str:
        """What a cached reply of this route is keyed by: the version, the fresh segment's state
        once it holds anything (replies change with every item upserted or removed), and the
        arm (a reply names it)."""
        fresh = self.version.fresh
        tag = self.version.version
        if fresh.generation:
            tag += f"+{fresh.generation}"
        return f"{tag}@{self.variant}" if self.variant else tag


def assignment_key(request: AnyRequest) -> str | None:
    """Who the request is for, as an experiment assigns arms: the user, else the `subject` the
    caller gave (a session or device id); None: anonymous, served by the control arm."""
    user = getattr(request, "user_id", None)
    return user or request.subject


class Router:
    def __init__(self, serving: Serving, pins: PinLoader | None = None) -> None:
        self.serving = serving
        self._pins = pins
        self._held = {v.version: v for v in serving.versions()}

    @staticmethod
    def single(version: LoadedVersion) -> Router:
        return Router(Serving.single(version))

    @property
    def primary(self) -> LoadedVersion:
        primary = self.serving.primary
        assert primary is not None
        return primary

    def route(self, request: AnyRequest) -> Route:
        """The route of a request; NotServed with the reason when no version can answer it."""
        model = self.serving.models.get(request.model)
        if model is None:
            raise NotServed(unknown_model(request.model, self.serving))
        if request.version is not None:
            held = model.held.get(request.version)
            if held is not None:
                return Route(held, request.model, pinned=True)
            if self._pins is None:
                raise NotServed(
                    f"version {request.version} of model {request.model} is not held by this worker"
                )
            return Route(self._pins(request.model, request.version), request.model, pinned=True)
        experiment = model.experiment
        key = assignment_key(request)
        if experiment is None or key is None:
            return Route(model.latest, request.model)
        arm = experiment.arm_for(key)
        return Route(model.arm_version(arm), request.model, variant=arm.name)

    def version_named(self, name: str | None) -> LoadedVersion | None:
        """A version of the snapshot by name (the live recall sampler re-answers with it)."""
        return self._held.get(name) if name else None
