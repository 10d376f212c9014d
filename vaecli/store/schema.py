"""One reader and one writer for every record stored as JSON: dataclasses whose fields carry their checks.

A field's check is its `check` metadata (a Check), or else its type: bool, int, float, str, a record, or any
of them or None. Field metadata may also say `required` (refused when absent) and `absent` (the value a file
written before the field existed stands for, where it is not the default). Adding a field adds its check,
its JSON key and its reading: a type this module cannot check is refused when the record is first used.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from vaecli.errors import CheckpointError

MAX_OPTION_TEXT = 4096  # a text of a typed record (a dataset folder's path is at most PATH_MAX)
_DEFAULT = object()  # an absent key leaves the field at its default


class Refusal(CheckpointError):
    """A stored record's field is missing or not what its check accepts; the message names it by its path."""


@dataclass(frozen=True)
class Check:
    """What one stored field must be, how a refusal names it, and how it becomes an attribute and back."""

    accepts: Callable[[Any], bool]
    what: str = ""  # follows the field's name in the refusal; "": `field NAME has a bad value VALUE`
    read: Callable[[Any, str], Any] | None = None  # (accepted JSON value, its name) -> the attribute
    write: Callable[[Any], Any] | None = None  # the attribute -> its JSON value
    omit_none: bool = True  # a None attribute is left out of the JSON, as a file that lacks it
    rest: bool = False  # the field holds every key no other field names, kept as it is

    def refusal(self, name: str, value: Any) -> Refusal:
        if self.what:
            return Refusal(f"{name} {self.what}")
        return Refusal(f"field {name} has a bad value {str(value)[:40]!r}")


@dataclass(frozen=True)
class Derived:
    """A key written from the record's other fields for readers that do not parse them; checked, never read."""

    value: Callable[[Any], Any]
    check: Check


@dataclass(frozen=True)
class _Field:
    name: str
    check: Check
    required: bool
    absent: Any


def stored(check: Check, default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
           required: bool = False, absent: Any = _DEFAULT) -> Any:
    """A dataclass field with its check (and whether it is required, and what an absent key stands for)."""
    metadata = {"check": check, "required": required, "absent": absent}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


class Record:
    """A record stored as JSON: to_dict and from_dict through this module's one reader and writer."""

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, name: str = "") -> Any:
        """Read (and check) a JSON object; `name` says where it lies in its file, for refusals."""
        return from_dict(cls, data, name)


# --- reading and writing ----------------------------------------------------------------------------------


def from_dict(cls: type, data: Any, name: str) -> Any:
    """The record of class `cls` that JSON object `data` holds, each field checked in order; `name` is where
    `data` lies in its file (`history[3]`), for refusals. Raises Refusal naming the first bad field."""
    if not isinstance(data, dict):
        raise Refusal(f"{name} is not an object")
    values: dict[str, Any] = {}
    for field_ in fields_of(cls):
        path = f"{name}.{field_.name}" if name else field_.name
        if field_.check.rest:
            values[field_.name] = {key: value for key, value in data.items() if key not in known_keys(cls)}
        elif field_.name in data:
            value = data[field_.name]
            if not field_.check.accepts(value):
                raise field_.check.refusal(path, value)
            values[field_.name] = field_.check.read(value, path) if field_.check.read else value
        elif field_.required:
            raise field_.check.refusal(path, None)
        elif field_.absent is not _DEFAULT:
            values[field_.name] = field_.absent
    for key, derived in derived_keys(cls).items():
        if key in data and not derived.check.accepts(data[key]):
            raise derived.check.refusal(f"{name}.{key}" if name else key, data[key])
    return cls(**values)


def to_dict(record: object) -> dict:
    """The JSON object of a record: its fields (None ones left out where the check says), derived keys, the rest."""
    data: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    cls: type = type(record)
    for field_ in fields_of(cls):
        value = getattr(record, field_.name)
        if field_.check.rest:
            rest = value
        elif value is not None or not field_.check.omit_none:
            data[field_.name] = field_.check.write(value) if field_.check.write and value is not None else value
    for key, derived in derived_keys(cls).items():
        data[key] = derived.value(record)
    return {**data, **rest}


@functools.cache
def fields_of(cls: type) -> tuple[_Field, ...]:
    """Each field of a record class with its check: declared, or derived from its type (TypeError if neither)."""
    hints = typing.get_type_hints(cls)
    found = []
    for field_ in dataclasses.fields(cls):
        check = field_.metadata.get("check") or _check_of_type(hints[field_.name], f"{cls.__name__}.{field_.name}")
        found.append(_Field(field_.name, check, field_.metadata.get("required", False),
                            field_.metadata.get("absent", _DEFAULT)))
    return tuple(found)


def derived_keys(cls: type) -> dict[str, Derived]:
    return getattr(cls, "DERIVED", {})


@functools.cache
def known_keys(cls: type) -> frozenset[str]:
    """The JSON keys a record class reads or writes itself (not into its `rest` field)."""
    return frozenset(f.name for f in fields_of(cls) if not f.check.rest) | frozenset(derived_keys(cls))


# --- checks ---------------------------------------------------------------------------------------------


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A number a reader can format: any float (NaN and Inf print as such), an int within a float's range."""
    # JSON integers are unbounded: one past float's range is a bad value, not an OverflowError later.
    return isinstance(value, float) or (is_whole(value) and abs(value) < 2**1023)


def is_count(value: Any, most: int) -> bool:
    return is_whole(value) and 0 <= value <= most


def text(most: int) -> Check:
    return Check(lambda value: isinstance(value, str) and len(value) <= most,
                 f"is not a text of at most {most} characters")


def count(most: int, what: str = "") -> Check:
    return Check(lambda value: is_count(value, most), what or f"is not a whole number from 0 to {most}")


def whole(low: int, high: int) -> Check:
    return Check(lambda value: is_whole(value) and low <= value <= high, f"is not a whole number from {low} to {high}")


NUMBER = Check(is_number, "is not a number")
FLAG = Check(lambda value: isinstance(value, bool), "is not true or false")


def list_of(accepts: Callable[[Any], bool], most: int, what: str) -> Check:
    return Check(lambda value: isinstance(value, list) and len(value) <= most and all(map(accepts, value)), what)


def nullable(check: Check) -> Check:
    """`check`, or null (read as None)."""
    read = check.read
    return dataclasses.replace(check, accepts=lambda value: value is None or check.accepts(value),
                               read=read and (lambda value, name: None if value is None else read(value, name)))


def keep_null(check: Check) -> Check:
    """`check`, its None attribute written as null rather than left out."""
    return dataclasses.replace(check, omit_none=False)


def record(cls: type, read: Callable[[Any, str], Any] | None = None) -> Check:
    """A nested record, read field by field (or by `read`) and written as its JSON object."""
    return Check(lambda value: isinstance(value, dict), "is not an object",
                 read=read or functools.partial(from_dict, cls), write=to_dict)


def records(cls: type, most: int, what: str) -> Check:
    """A list of at most `most` records, each named by its index: history[3]."""

    def read(items: list, name: str) -> list:
        return [from_dict(cls, item, f"{name}[{index}]") for index, item in enumerate(items)]

    return Check(lambda value: isinstance(value, list) and len(value) <= most, what, read=read,
                 write=lambda items: [to_dict(item) for item in items])


REST = Check(lambda value: True, rest=True)


def _check_of_type(hint: Any, where: str) -> Check:
    """The check a field's type stands for: a typed record's scalars are written whole, None included."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if type(None) in options and len(options) == 2:
        inner = next(option for option in options if option is not type(None))
        return keep_null(nullable(_check_of_type(inner, where)))
    if hint is bool:
        return Check(lambda value: isinstance(value, bool), omit_none=False)
    if hint is int:
        return Check(is_whole, omit_none=False)
    if hint is float:
        return Check(is_number, read=lambda value, name: float(value), omit_none=False)
    if hint is str:
        # A NUL cannot be in a path or option; os calls on it raise ValueError, not OSError.
        return Check(lambda value: isinstance(value, str) and len(value) <= MAX_OPTION_TEXT and "\0" not in value,
                     omit_none=False)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return record(hint)
    raise TypeError(f"{where}: a stored field of type {hint} needs a check (schema.stored)")
