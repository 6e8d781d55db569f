"""The `filter` of a request: a small boolean expression over a version's item attributes.

    {"attr": "category", "eq": "shoes"}
    {"attr": "brand", "in": ["acme", "globex"]}
    {"all": [f, ...]}   {"any": [f, ...]}   {"not": f}

Data only: its evaluation against a version is query_engine/selection.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, TypeAdapter

# Bounds a hostile request cannot exceed: evaluation costs O(terms x items) at worst.
MAX_FILTER_DEPTH = 8
MAX_FILTER_TERMS = 64
MAX_IN_VALUES = 1000
MAX_VALUE_CHARS = 256

FilterValue = (
    Annotated[str, Field(min_length=1, max_length=MAX_VALUE_CHARS)] | StrictBool | StrictInt
)


class _Term(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AttrEquals(_Term):
    """Items whose attribute `attr` has the value `eq`."""

    attr: str = Field(min_length=1, max_length=64)
    eq: FilterValue


class AttrIn(_Term):
    """Items whose attribute `attr` has one of the values `in`."""

    attr: str = Field(min_length=1, max_length=64)
    in_: list[FilterValue] = Field(alias="in", min_length=1, max_length=MAX_IN_VALUES)


class AllOf(_Term):
    """Items passing every filter of `all`."""

    all: list[Filter] = Field(min_length=1, max_length=MAX_FILTER_TERMS)


class AnyOf(_Term):
    """Items passing at least one filter of `any`."""

    any: list[Filter] = Field(min_length=1, max_length=MAX_FILTER_TERMS)


class NotOf(_Term):
    """Items not passing the filter `not`."""

    not_: Filter = Field(alias="not")


Filter = Union[AttrEquals, AttrIn, AllOf, AnyOf, NotOf]  # noqa: UP007 (a forward-referenced alias)
for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


FILTER_ADAPTER: TypeAdapter[Filter] = TypeAdapter(Filter)


def children(f: Filter) -> Sequence[Filter]:
    if isinstance(f, AllOf):
        return f.all
    if isinstance(f, AnyOf):
        return f.any
    if isinstance(f, NotOf):
        return (f.not_,)
    return ()


def check_shape(f: Filter) -> Filter:
    """Refuse filters deeper than MAX_FILTER_DEPTH or with more than MAX_FILTER_TERMS terms."""
    terms, stack = 0, [(f, 1)]
    while stack:
        node, depth = stack.pop()
        terms += 1
        if depth > MAX_FILTER_DEPTH:
            raise ValueError(f"filter nested deeper than {MAX_FILTER_DEPTH} levels")
        if terms > MAX_FILTER_TERMS:
            raise ValueError(f"filter has more than {MAX_FILTER_TERMS} terms")
        stack.extend((c, depth + 1) for c in children(node))
    return f
