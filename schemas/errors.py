"""One root for annrec's own errors, so the CLI can turn any of them into a one-line exit."""


class AnnrecError(Exception):
    """A failure with a reason a person can act on."""


class InvalidInput(AnnrecError):
    """Input data (factors, ids, an event) that annrec refuses, with the reason."""


class IndexRejected(AnnrecError):
    """An index version that failed verification; the previous version keeps serving."""


class VersionMissing(AnnrecError):
    """A version that is named (LATEST, an announcement) but not visible in storage yet; retried,
    unlike a rejected one (a shared filesystem or object store may lag behind the announcement)."""
