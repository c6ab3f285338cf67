"""Settings as frozen dataclasses, every field with its help and its bounds: the one form that
solver settings (:mod:`.influence.settings`) and ground-truth settings
(:mod:`.ground_truth.truths`) share.

A field is declared with :func:`setting` (Kronfluence's ``field(metadata={"help": ...})`` style);
:class:`Settings` validates every field from that metadata in ``__post_init__`` (types, bounds,
choices, ``None`` where the type allows it), so a bad value is an error that says what to pass,
wherever the settings come from (Python, the CLI or a widget). The widgets build one control per
field from the same metadata. This module is private and top-level (like ``_findings``), so every
layer may import it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar


def setting(default: Any, help: str, *, minimum: float | None = None, above: float | None = None,
            choices: tuple[Any, ...] | None = None, advanced: bool = False,
            blank: str | None = None) -> Any:
    """A settings field: ``help`` is shown beside its control; ``minimum`` (inclusive) and
    ``above`` (exclusive) bound a number; ``choices`` lists the allowed values; ``advanced``
    fields are left out of the widget's controls (still settable in Python); ``blank`` says
    what ``None`` means for an optional field (e.g. "automatic")."""
    meta = {"help": help, "minimum": minimum, "above": above, "choices": choices,
            "advanced": advanced, "blank": blank}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldInfo:
    """What a front end needs to draw a control for one settings field."""

    name: str
    kind: type  # int, float, bool or str
    optional: bool  # None allowed (a blank control)
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    advanced: bool
    blank: str | None


@dataclass(frozen=True)
class Settings:
    """Base class of every settings dataclass (no fields of its own).

    ``KIND`` names what the settings belong to in messages ("solver", "ground truth");
    ``UNKNOWN_NOTE`` is added to the message for an unknown option. ``ALIASES`` maps an old
    option name to its current one; :meth:`from_options` accepts the old name with a
    ``FutureWarning``.
    """

    KIND: ClassVar[str] = "settings"
    UNKNOWN_NOTE: ClassVar[str] = ""
    ALIASES: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for f, info in zip(dataclasses.fields(self), self.fields()):
            value = getattr(self, f.name)
            if info.kind in (int, float):  # a numpy or 0-d torch number is the number it holds
                plain = scalar(value)
                if info.kind is int and isinstance(plain, float) and math.isfinite(plain) \
                        and plain == int(plain) and not isinstance(value, float):
                    plain = int(plain)
                if plain is not value:
                    object.__setattr__(self, f.name, plain)
                    value = plain
            _check_value(type(self).__name__, info, value, f.metadata)

    @classmethod
    def fields(cls) -> list[FieldInfo]:
        """One :class:`FieldInfo` per field, in declaration order (resolved once per class)."""
        cached = cls.__dict__.get("_field_infos")
        if cached is None:
            cached = cls._resolve_fields()
            cls._field_infos = cached  # on this class only: a subclass resolves its own
        return list(cached)

    @classmethod
    def _resolve_fields(cls) -> tuple[FieldInfo, ...]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            kind, optional = _base_type(hints[f.name])
            m = f.metadata
            out.append(FieldInfo(f.name, kind, optional, f.default, m.get("help", ""),
                                 m.get("choices"), bool(m.get("advanced")), m.get("blank")))
        return tuple(out)

    @classmethod
    def from_options(cls, owner: str = "", **options: Any) -> Settings:
        """Settings from keyword options; an unknown name is a ``TypeError`` listing the valid ones.
        ``owner`` is the name of what they belong to (a solver's or a ground truth's name)."""
        names = [f.name for f in dataclasses.fields(cls)]
        given = {}
        for key, value in options.items():
            new = cls.ALIASES.get(key)
            if new is not None:
                warnings.warn(f"solver option {key!r} is now called {new!r}; the old name will be "
                              "removed in a later release", FutureWarning, stacklevel=3)
                key = new
            if key not in names:
                who = f"{cls.KIND} {owner!r}" if owner else cls.__name__
                valid = ", ".join(names) if names else "none"
                raise TypeError(f"{who} has no option {key!r}; its options are: {valid}"
                                f"{cls.UNKNOWN_NOTE}")
            given[key] = value
        return cls(**given)

    def options(self) -> dict[str, Any]:
        """The settings as keyword options (what :meth:`from_options` takes back)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[str]:
        """One line per field: name, default and help (for ``list`` and docstrings)."""
        return [f"{f.name} = {f.default!r}: {f.help}" for f in cls.fields()]


def _base_type(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)] if args else [hint]
    kind = kinds[0]
    if kind not in (int, float, bool, str):
        raise TypeError(f"settings fields must be int, float, bool or str (optionally None), got {hint}")
    return kind, optional


def _check_value(owner: str, info: FieldInfo, value: Any, meta: Any) -> None:
    where = f"{owner}.{info.name}"
    if value is None:
        if info.optional:
            return
        raise ValueError(f"{where} cannot be None; {info.help}")
    kind = info.kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        what = {bool: "True or False", int: "an integer", float: "a finite number", str: "a string"}[kind]
        none = " or None" if info.optional else ""
        raise ArgumentTypeError(f"{where} must be {what}{none}, got {value!r} ({info.help})")
    if info.choices is not None and value not in info.choices:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, info.choices))}, got {value!r}")
    lo, above = meta.get("minimum"), meta.get("above")
    if lo is not None and value < lo:
        raise ValueError(f"{where} must be >= {lo:g}, got {value!r} ({info.help})")
    if above is not None and value <= above:
        raise ValueError(f"{where} must be > {above:g}, got {value!r} ({info.help})")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (text for a number, a fraction for an integer): a
    ``TypeError``, and a ``ValueError`` too for callers that catch bad values."""


def scalar(value: Any) -> Any:
    """A numeric scalar of numpy or torch (``np.float32(0.01)``, a 0-d tensor or array) as the
    Python number it holds; anything else as given. Python's own numbers pass through."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if type(value).__module__ == "numpy" or hasattr(value, "dim") or hasattr(value, "ndim"):
        if getattr(value, "ndim", None) == 0 or (hasattr(value, "dim") and value.dim() == 0):
            item = value.item()
            if isinstance(item, bool | int | float):
                return item
    return value


def number(value: Any, name: str, *, integer: bool = False, minimum: float | None = None,
           above: float | None = None, hint: str = "", owner: str = "") -> Any:
    """``value`` as a Python ``float`` (``int`` when ``integer``): Python, numpy and 0-d torch
    numbers are accepted; text, booleans, fractional integers, NaN/inf and out-of-range values
    are an :class:`ArgumentTypeError` / ``ValueError`` that names the argument (``owner``: what
    it belongs to, e.g. "TrainConfig") and what to pass."""
    v = scalar(value)
    want = "an integer" if integer else "a finite number"
    tip = f" ({hint})" if hint else ""
    where = f"{owner}.{name}" if owner else name
    if isinstance(v, str):
        try:
            parsed = int(v) if integer else float(v)
            example = f"e.g. {name}={parsed!r}"
        except ValueError:
            example = f"e.g. {name}={1 if integer else 0.01}"
        raise ArgumentTypeError(f"{where} must be {want}, got the text {value!r}: pass a number, "
                                f"not a string ({example}){tip}")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ArgumentTypeError(f"{where} must be {want}, got {type(value).__name__} "
                                f"{value!r}{tip}")
    if integer:
        if isinstance(v, float):
            if not (math.isfinite(v) and v == int(v)):
                raise ArgumentTypeError(
                    f"{where} must be an integer, got {value!r}: pass a whole number (e.g. "
                    f"{name}={max(1, round(v)) if math.isfinite(v) else 1}){tip}")
            v = int(v)
    elif not math.isfinite(v):
        raise ValueError(f"{where} must be a finite number, got {value!r}{tip}")
    else:
        v = float(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{where} must be {want} >= {minimum:g}, got {value!r}{tip}")
    if above is not None and v <= above:
        raise ValueError(f"{where} must be {want} > {above:g}, got {value!r}{tip}")
    return v


class Registry(dict):
    """Named classes of one kind (solvers, ground truths), each carrying a ``name`` and a
    ``Settings`` dataclass: a dict ``name -> class`` that every layer reads, so adding an entry
    is one class and one :meth:`register` call. The package's own entries cannot be removed."""

    def __init__(self, kind: str, base: type, settings: type[Settings]) -> None:
        super().__init__()
        self.kind, self.base, self.settings = kind, base, settings

    def register(self, cls: type) -> type:
        """Add ``cls`` under ``cls.name`` (usable as a class decorator)."""
        word = self.kind.replace(" ", "_")
        if not (isinstance(cls, type) and issubclass(cls, self.base)) or not cls.name:
            raise TypeError(f"register_{word} takes a {self.base.__name__} subclass with a "
                            "non-empty name")
        if not (isinstance(cls.Settings, type) and issubclass(cls.Settings, self.settings)):
            raise TypeError(f"{self.kind} {cls.name!r}: Settings must be a "
                            f"{self.settings.__name__} dataclass")
        if cls.name in self and self[cls.name] is not cls:
            raise ValueError(f"a {self.kind} named {cls.name!r} is already registered")
        self[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove an entry added with :meth:`register` (the package's own ones stay)."""
        cls = self.get(name)
        if cls is not None and cls.__module__.startswith("influence_widgets."):
            raise ValueError(f"{name!r} is a built-in {self.kind}")
        self.pop(name, None)

    def lookup(self, name: Any) -> type:
        """The class called ``name``, or a ``ValueError`` listing the valid names."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: "
                             f"{', '.join(self)}") from None
