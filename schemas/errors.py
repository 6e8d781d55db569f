"""One root for annrec's own errors, so the CLI can turn any of them into a one-line exit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails


class AnnrecError(Exception):
    """A failure with a reason a person can act on."""


class InvalidInput(AnnrecError):
    """Input data (factors, ids, an event) that annrec refuses, with the reason."""


class IndexRejected(AnnrecError):
    """An index version that failed verification; the previous version keeps serving."""


class VersionMissing(AnnrecError):
    """A version that is named (LATEST, an announcement) but not visible in storage yet; retried,
    unlike a rejected one (a shared filesystem or object store may lag behind the announcement)."""


# Pydantic's error types in the project's words: what the value must be. `{name}` fields come from
# the error's context (the bound, the allowed values).
_MUST: dict[str, str] = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} items",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "json_invalid": "is not valid JSON ({error})",
    "datetime_from_date_parsing": "must be an ISO 8601 date and time",
    "datetime_parsing": "must be an ISO 8601 date and time",
    "url_parsing": "must be a URL",
}
# Error types whose input is not worth repeating (absent, or the whole document).
_NO_INPUT = {"missing", "extra_forbidden", "json_invalid"}
_MAX_SHOWN = 40


def describe(
    exc: ValidationError,
    limit: int = 1,
    whole: str = "value",
    label: Callable[[str], str] | None = None,
) -> str:
    """A validation error as sentences `where must be what (got x)` for its first `limit` errors
    (`; ` between them; `whole` names an error of the whole document; `label` renames a field,
    e.g. with the variable that sets it): the one way every refusal of an event, a manifest, a
    setting or a parameter is worded."""
    errors = exc.errors(include_url=False)[:limit]
    return "; ".join(_sentence(err, whole, label or str) for err in errors)


def _sentence(err: ErrorDetails, whole: str, label: Callable[[str], str]) -> str:
    where = label(".".join(str(p) for p in err["loc"])) if err["loc"] else whole
    kind = err["type"]
    if kind in ("too_short", "too_long") and isinstance(err.get("input"), str):
        # A length constraint after a BeforeValidator is reported as a sequence's, on a string.
        kind = f"string_{kind}"
    template = _MUST.get(kind)
    if template is None:  # a validator's own message, or a type without a sentence here
        return f"{where}: {err['msg'].removeprefix('Value error, ')}"
    must = template.format_map(_Context(err.get("ctx") or {}))
    shown = repr(err.get("input"))
    got = "" if err["type"] in _NO_INPUT or len(shown) > _MAX_SHOWN else f" (got {shown})"
    return f"{where} {must}{got}"


class _Context(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"
