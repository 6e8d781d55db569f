"""One root for annrec's own errors, so the CLI can turn any of them into a one-line exit."""

from __future__ import annotations

from pydantic import ValidationError


class AnnrecError(Exception):
    """A failure with a reason a person can act on."""


class InvalidInput(AnnrecError):
    """Input data (factors, ids, an event) that annrec refuses, with the reason."""


class IndexRejected(AnnrecError):
    """An index version that failed verification; the previous version keeps serving."""


class VersionMissing(AnnrecError):
    """A version that is named (LATEST, an announcement) but not visible in storage yet; retried,
    unlike a rejected one (a shared filesystem or object store may lag behind the announcement)."""


def describe(exc: ValidationError, limit: int = 1, whole: str = "value") -> str:
    """A validation error as `where: what` for its first `limit` errors (`; ` between them;
    `whole` names an error of the whole document): the one way every refusal of an event, a
    manifest, a setting or a parameter is worded."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or whole
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
