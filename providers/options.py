"""A provider's deployment keys, declared once: what each key holds, its default, its limits.

Every provider class carries a :class:`Settings`: its own option keys (a mapping from key
to :class:`Option`), whether it needs ``model`` and ``base_url``, keys that go together,
and at most one small function for checks that span keys. The config reader validates a
deployment against it (:meth:`Settings.validate`) and reports each problem with its YAML
path; a provider then reads its options already checked, defaults filled by
:meth:`Settings.value`. No provider repeats a type check.

This module is pure (no I/O, nothing of ``gateway``), so both the config reader and the
providers import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

import httpx

__all__ = [
    "COMMON_UPSTREAM_OPTIONS",
    "CrossCheck",
    "Option",
    "Problems",
    "Settings",
    "choice",
    "flag",
    "int_pair",
    "is_whole",
    "legacy_settings",
    "number",
    "scalar",
    "text",
    "url_problem",
    "whole",
]

OptionKind = Literal["bool", "int", "number", "text", "choice", "pair", "scalar"]
#: (key, message) pairs: a key's problem, reported at ``<deployment path>.<key>``.
Problems = list[tuple[str, str]]
#: Checks spanning several keys: (model, base_url, options holding only valid values).
CrossCheck = Callable[[str | None, str | None, Mapping[str, Any]], Problems]

_MISSING = object()


def is_whole(value: Any) -> TypeGuard[int]:
    """An int that is not a bool (YAML and JSON give ``true`` as a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class Option:
    """One deployment key: its kind, default and bounds. ``message`` replaces the generic
    complaint when the value is wrong."""

    kind: OptionKind
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    #: Exclusive upper bound (a fraction below 1, say).
    below: float | None = None
    choices: tuple[str, ...] = ()
    message: str | None = None
    doc: str = ""
    #: The deployment must give it (reported as "is required: <doc>").
    required: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value``, or None when it is acceptable."""
        problem = self._problem(value)
        return None if problem is None else (self.message or problem)

    def _problem(self, value: Any) -> str | None:
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "int":
            low = int(self.minimum if self.minimum is not None else 1)
            high = f" and at most {int(self.maximum)}" if self.maximum is not None else ""
            if is_whole(value) and value >= low and (self.maximum is None or value <= self.maximum):
                return None
            return f"must be a whole number of at least {low}{high}"
        if self.kind == "number":
            if _is_number(value) and self._in_bounds(float(value)):
                return None
            return f"must be a number{self._bounds_text()}"
        if self.kind == "text":
            return None if isinstance(value, str) and value else "must be a non-empty string"
        if self.kind == "choice":
            if value in self.choices:
                return None
            return f"must be one of {', '.join(self.choices)}, not {value!r}"
        if self.kind == "pair":
            if (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(is_whole(v) for v in value)
                and 1 <= value[0] <= value[1]
            ):
                return None
            return "must be [min, max]: two whole numbers with 1 <= min <= max"
        if isinstance(value, str) and value or _is_number(value):  # scalar
            return None
        return "must be a string or a number"

    def _in_bounds(self, value: float) -> bool:
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        return self.below is None or value < self.below

    def _bounds_text(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f"at least {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"at most {self.maximum:g}")
        if self.below is not None:
            parts.append(f"below {self.below:g}")
        return (" " + " and ".join(parts)) if parts else ""


def flag(default: bool, doc: str = "") -> Option:
    return Option(kind="bool", default=default, doc=doc)


def whole(default: int | None = None, *, minimum: int = 1, maximum: int | None = None, doc: str = "") -> Option:
    return Option(kind="int", default=default, minimum=minimum, maximum=maximum, doc=doc)


def number(
    default: float | None = None,
    *,
    minimum: float | None = 0.0,
    below: float | None = None,
    message: str | None = None,
    doc: str = "",
) -> Option:
    return Option(kind="number", default=default, minimum=minimum, below=below, message=message, doc=doc)


def text(
    default: str | None = None, *, message: str | None = None, doc: str = "", required: bool = False
) -> Option:
    return Option(kind="text", default=default, message=message, doc=doc, required=required)


def choice(*choices: str, default: str | None = None, doc: str = "") -> Option:
    return Option(kind="choice", default=default, choices=choices, doc=doc)


def int_pair(doc: str = "") -> Option:
    """``[min, max]``: two whole numbers, 1 <= min <= max."""
    return Option(kind="pair", doc=doc)


def scalar(default: Any = None, doc: str = "") -> Option:
    """A string or a number (a duration given either way, say)."""
    return Option(kind="scalar", default=default, doc=doc)


#: What every HTTP upstream provider takes.
COMMON_UPSTREAM_OPTIONS: Mapping[str, Option] = {
    "dimensions": whole(doc="the width of the vectors the deployment serves"),
    "max_connections": whole(100, doc="connections pooled (and kept alive) to the upstream"),
}


def url_problem(base_url: str | None) -> str | None:
    """A problem with ``base_url``, or None when it is an http(s) URL with a host that the
    HTTP client can call. Messages never repeat the URL: it may hold a password."""
    if base_url is None:
        return None
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018  (parsing the port is the check)
        httpx.URL(base_url)
    except (ValueError, httpx.InvalidURL):
        return "is not a URL the HTTP client can use (check the host, the port and for spaces)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host name"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user name or password (user:pass@); put the key in api_key or headers"
    if parts.query or parts.fragment:
        return "must not carry a query string or fragment"
    return None


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the config reader needs to check a deployment of one provider.

    ``model`` / ``base_url``: ``required``, ``optional`` or (base_url only) ``refused``;
    ``model_message`` / ``base_url_message`` say what to give when the rule is broken.
    ``together``: groups of keys that are given all or none. ``check``: the cross-key
    checks left once every value has its right type (it sees only valid values).
    ``input_type``: whether the provider honours a request's ``input_type`` (embeds a
    query and a document differently): ``True`` always, ``False`` never (it ignores it),
    or a tuple of option keys: when any of them is given (a local model's prefixes).
    """

    options: Mapping[str, Option] = field(default_factory=dict)
    model: Literal["required", "optional"] = "optional"
    model_message: str = "is required: the upstream's model name"
    base_url: Literal["required", "optional", "refused"] = "optional"
    base_url_message: str | None = None
    together: tuple[tuple[str, ...], ...] = ()
    check: CrossCheck | None = None
    input_type: bool | tuple[str, ...] = False

    def honours_input_type(self, options: Mapping[str, Any]) -> bool:
        if isinstance(self.input_type, bool):
            return self.input_type
        return any(options.get(key) is not None for key in self.input_type)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.options)

    def value(self, options: Mapping[str, Any], key: str) -> Any:
        """The option's value, or its declared default."""
        value = options.get(key, _MISSING)
        return self.options[key].default if value is _MISSING or value is None else value

    def validate(self, *, model: str | None, base_url: str | None, options: Mapping[str, Any]) -> Problems:
        """Every problem of a deployment's settings, ordered model, base_url, then options
        in declaration order; an empty list when all is well."""
        problems: Problems = []
        if self.model == "required" and not model:
            problems.append(("model", self.model_message))
        if self.base_url == "refused" and base_url is not None:
            problems.append(("base_url", self.base_url_message or "this provider takes no base_url"))
        elif self.base_url == "required" and base_url is None:
            problems.append(("base_url", self.base_url_message or "is required: the upstream's URL"))
        else:
            problem = url_problem(base_url)
            if problem:
                problems.append(("base_url", problem))
        valid: dict[str, Any] = {}
        for key, value in options.items():
            option = self.options.get(key)
            if option is None or value is None:
                continue
            problem = option.problem(value)
            if problem:
                problems.append((key, problem))
            else:
                valid[key] = value
        for key, option in self.options.items():
            if option.required and options.get(key) is None:
                problems.append((key, f"is required: {option.doc}" if option.doc else "is required"))
        for group in self.together:
            given = [key for key in group if options.get(key) is not None]
            if given and len(given) != len(group):
                problems.append((group[0], f"{' and '.join(group)} go together"))
        if self.check is not None:
            wrong = {key for key, _ in problems}
            url = None if "base_url" in wrong else base_url
            problems += self.check(None if "model" in wrong else model, url, valid)
        return self._ordered(problems)

    def _ordered(self, problems: Problems) -> Problems:
        rank = {"model": 0, "base_url": 1, **{key: 2 + i for i, key in enumerate(self.options)}}
        unique = list(dict.fromkeys(problems))
        return sorted(unique, key=lambda problem: rank.get(problem[0], len(rank) + 2))


def legacy_settings(option_keys: Iterable[str], check_settings: Callable[..., Problems] | None) -> Settings:
    """Settings for a plug-in written before :class:`Settings` existed: its ``option_keys``
    are accepted as they are and its own ``check_settings`` does the checking."""

    def check(model: str | None, base_url: str | None, options: Mapping[str, Any]) -> Problems:
        return [] if check_settings is None else list(check_settings(model=model, base_url=base_url, options=dict(options)))

    # A legacy class checks raw values itself, so every key is declared as a plain scalar
    # that accepts anything and the legacy check sees the raw options.
    anything = {key: Option(kind="scalar", message=None) for key in option_keys}
    return _LegacySettings(options=anything, check=check)


class _LegacySettings(Settings):
    def validate(self, *, model: str | None, base_url: str | None, options: Mapping[str, Any]) -> Problems:
        assert self.check is not None
        return self.check(model, base_url, options)
