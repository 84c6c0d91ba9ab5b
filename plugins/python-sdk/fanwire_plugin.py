"""Write Fanwire plugins in Python: what a resolver (or any plugin) sees,
as plain typed Python, over the bindings componentize-py generates for
`wit/v0.4.0` (the `wit_world` module, which exists only inside a component).

A resolver is one function of the event and the group's context, returning
the field's value as JSON-able Python (a dict for a field of object type,
`None` for none):

    from typing import Any
    from fanwire_plugin import Event, resolver

    @resolver
    def tick(event: Event, context: str) -> Any:
        return {**event.data, "payload": event.data["payload"].upper()}

What it needs of the group (the field's arguments, the variables, the
principal) it reads once per group in a `prepare` function, whose string
(the context) then comes with every event of the group; without one the
context is empty:

    def subject(call: FieldCall) -> str:
        return call.principal.subject or ""

    @resolver(prepare=subject)
    def tick(event: Event, subject: str) -> Any:
        return {**event.data, "for": subject}

Raise `ResolverError(message, code)` (in either function) to send the
group's subscribers that error at the field; any other exception is logged
and reaches them as "Resolver for `tick` raised KeyError: ..."
(`extensions.code` `RESOLVER_FAILED`), as a pyo3 resolver's does. A failed
`prepare` is asked again at the group's next event. Build with
componentize-py, world `field-resolver`, with this folder on its path
(`-p`); `bash plugins/build.sh` does it for the example in
`examples/resolver-component/`.

Layout: what a resolver receives (`Principal`, `Event`, `FieldCall`, read
from the generated records) and `ResolverError`; `config()`, `log()` and `now_ms()`, what the host offers
every plugin; `resolver`, which exports a function (and its `prepare`) as
the world's resolver.
"""

from __future__ import annotations

import _json
import gc
import json
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Tuple, cast, overload

from wit_world.imports import host, types

if TYPE_CHECKING:
    from componentize_py_types import Err

    # Only a component of the `field-resolver` world has this module.
    from wit_world.exports import resolver as _wit

__all__ = [
    "Event",
    "FieldCall",
    "Principal",
    "ResolverError",
    "config",
    "log",
    "now_ms",
    "resolver",
]


# The C scanner behind `json.loads`, called directly: `json.loads` adds two
# regular expression matches and three Python calls, which cost more than
# the scan of a small event's data inside a component.
_scan = _json.make_scanner(cast(_json.make_scanner, json.JSONDecoder()))


def _loads(text: str) -> Any:
    """JSON text from the host (compact, as the host renders it)."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):
        # Whitespace around the value, or not JSON: `json.loads` decides (and raises).
        return json.loads(text)
    return value


def _object(text: str) -> Dict[str, Any]:
    """A JSON object the host sent; anything else reads as empty."""
    if text == "{}":
        return {}
    value = _loads(text)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Principal:
    """Who subscribed. Anonymous subscribers have every field empty."""

    subject: Optional[str]
    """The user (a JWT's `sub`)."""
    tenant: Optional[str]
    """The tenant the user belongs to."""
    roles: Tuple[str, ...]
    """Roles or permissions, e.g. `order:read`."""
    claims: Dict[str, Any]
    """Every verified claim."""
    expires_at: Optional[int]
    """When the credentials expire (Unix seconds)."""

    def has_role(self, role: str) -> bool:
        """Whether the principal holds `role`."""
        return role in self.roles

    @staticmethod
    def of(p: types.Principal) -> Principal:
        """From the generated record."""
        return Principal(p.subject, p.tenant, tuple(p.roles), _object(p.claims), p.expires_at)


@dataclass(frozen=True)
class Event:
    """One published event."""

    topic: str
    """The topic it was published on."""
    data: Any
    """Its data, parsed (the filters' redactions applied)."""
    id: Optional[str]
    """The publisher's id."""
    seq: Optional[int]
    """Its position in the topic's history, if the host keeps one."""

    @staticmethod
    def of(e: types.Event) -> Event:
        """From the generated record."""
        # Filled in directly: a frozen dataclass's `__init__` sets each field
        # through `object.__setattr__`, twice the cost of the rest of this.
        event = _new(Event)
        fields = event.__dict__
        fields["topic"] = e.topic
        fields["data"] = _loads(e.data)
        fields["id"] = e.id
        fields["seq"] = e.seq
        return event


_new = object.__new__


class FieldCall:
    """What one group of subscriptions asks of the field.

    The host sends `arguments`, `variables` and the principal's claims as
    JSON, once per group (to `prepare`): each is parsed on first use, so a
    `prepare` pays only for what it reads.
    """

    __slots__ = ("_field", "_arguments", "_variables", "_principal", "_wire")

    def __init__(self, field: str, arguments: Dict[str, Any], variables: Dict[str, Any], principal: Principal) -> None:
        self._field = field
        self._arguments: Optional[Dict[str, Any]] = arguments
        self._variables: Optional[Dict[str, Any]] = variables
        self._principal: Optional[Principal] = principal
        self._wire: Optional[_wit.FieldCall] = None

    @staticmethod
    def of(call: _wit.FieldCall) -> FieldCall:
        """From the generated record, read on first use."""
        self = FieldCall.__new__(FieldCall)
        self._field = call.field
        self._arguments = self._variables = self._principal = None
        self._wire = call
        return self

    @property
    def field(self) -> str:
        """The root subscription field, e.g. `tick`."""
        return self._field

    @property
    def arguments(self) -> Dict[str, Any]:
        """The field's coerced arguments."""
        if self._arguments is None:
            assert self._wire is not None
            self._arguments = _object(self._wire.arguments)
        return self._arguments

    @property
    def variables(self) -> Dict[str, Any]:
        """The operation's coerced variables."""
        if self._variables is None:
            assert self._wire is not None
            self._variables = _object(self._wire.variables)
        return self._variables

    @property
    def principal(self) -> Principal:
        """Who subscribed."""
        if self._principal is None:
            assert self._wire is not None
            self._principal = Principal.of(self._wire.principal)
        return self._principal

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldCall):
            return NotImplemented
        return (self.field, self.arguments, self.variables, self.principal) == (
            other.field,
            other.arguments,
            other.variables,
            other.principal,
        )

    def __repr__(self) -> str:
        return f"FieldCall(field={self.field!r}, arguments={self.arguments!r}, variables={self.variables!r}, principal={self.principal!r})"


class ResolverError(Exception):
    """An error for the group's subscribers, at the field's path.

    `code` becomes `extensions.code`; the host uses `RESOLVER_FAILED` when
    it is `None`.
    """

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_config: Optional[Dict[str, Any]] = None


def config() -> Dict[str, Any]:
    """The plugin's `config` table from the host's configuration.

    Read on first use, never at import: componentize-py runs the module's
    top level at build time, when there is no host to ask.
    """
    global _config
    if _config is None:
        _config = _object(host.config())
    return _config


Level = Literal["trace", "debug", "info", "warn", "error"]

_LEVELS = {
    "trace": host.Level.TRACE,
    "debug": host.Level.DEBUG,
    "info": host.Level.INFO,
    "warn": host.Level.WARN,
    "error": host.Level.ERROR,
}


def log(level: Level, message: str, **fields: str) -> None:
    """One structured line in the host's log. Log per event only at `debug`
    or below: the host rate-limits nothing here."""
    host.log(_LEVELS[level], message, list(fields.items()))


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch."""
    return host.now_ms()


Resolve = Callable[[Event, str], Any]
"""A resolver: the field's value from the event and the group's context."""

Prepare = Callable[[FieldCall], str]
"""What a resolver keeps of a group: the context its calls receive."""


# One C encoder for every call, called directly: `JSONEncoder.encode` builds
# a new one (and a closure) per call. Compact, NaN and infinities refused,
# anything else that is not JSON a `TypeError` (the encoder's `default`).
_markers: Dict[int, Any] = {}
_encoder = _json.make_encoder(
    _markers, json.JSONEncoder().default, _json.encode_basestring_ascii, None, ":", ",", False, False, False
)


def _encode(value: Any) -> str:
    """`value` as compact JSON text."""
    try:
        return "".join(_encoder(value, 0))
    except BaseException:
        # What the encoder was in the middle of stays marked (it would read as
        # a circular reference in the next call).
        _markers.clear()
        raise


def _failure(field: str, message: str) -> types.GraphqlError:
    """A failure the subscribers see with the host's `RESOLVER_FAILED`."""
    return types.GraphqlError(f"Resolver for `{field}` {message}", None)


@overload
def resolver(fn: Resolve) -> Resolve: ...


@overload
def resolver(*, prepare: Prepare) -> Callable[[Resolve], Resolve]: ...


def resolver(fn: Optional[Resolve] = None, *, prepare: Optional[Prepare] = None) -> Any:
    """Exports `fn` as the component's resolver and returns it unchanged;
    `@resolver(prepare=p)` gives it `p` as its `prepare` (once per group:
    the string it returns is the `context` of every call for the group).

    componentize-py exports the class named `Resolver` of the app's module:
    this defines it in `fn`'s module, so that module must not define one.
    """
    if fn is None:
        return lambda fn: _export(fn, prepare)
    return _export(fn, prepare)


def _raised(field: str, where: str, e: Exception) -> Err[types.GraphqlError]:
    """An exception of the plugin's code, logged, as the error its subscribers see."""
    from componentize_py_types import Err

    log("error", f"resolver for {field} raised{where}", traceback="".join(traceback.format_exception(e)))
    return Err(_failure(field, f"raised {type(e).__name__}{where}: {e}"))


def _export(fn: Resolve, prepare: Optional[Prepare]) -> Resolve:
    # Only a component of the `field-resolver` world has this module.
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.exports import resolver as wit

    class Resolver(exports.Resolver):
        # The host's context is the field's name, `:`, then the plugin's
        # own: `resolve` names the field in its errors, as `prepare` does (a
        # GraphQL name has no `:`).
        def prepare(self, call: wit.FieldCall) -> str:
            if prepare is None:
                return call.field + ":"
            try:
                context = prepare(FieldCall.of(call))
            except ResolverError as e:
                raise Err(types.GraphqlError(e.message, e.code))
            except Exception as e:
                raise _raised(call.field, " in prepare", e)
            if not isinstance(context, str):
                raise Err(_failure(call.field, f"prepare returned {type(context).__name__}; expected a str"))
            return call.field + ":" + context

        # The whole call in the method componentize-py calls: a Python call
        # less per group per event.
        def resolve(self, event: types.Event, context: str) -> str:
            field, _, context = context.partition(":")
            try:
                value = fn(Event.of(event), context)
            except ResolverError as e:
                raise Err(types.GraphqlError(e.message, e.code))
            except Exception as e:
                raise _raised(field, "", e)
            try:
                return _encode(value)
            except (TypeError, ValueError) as e:
                raise Err(_failure(field, f"returned a value that is not JSON: {e}"))

    module = sys.modules[fn.__module__]
    if hasattr(module, "Resolver"):
        raise TypeError(f"{fn.__module__} defines `Resolver` already: @resolver exports one function per module")
    setattr(module, "Resolver", Resolver)
    # Everything imported so far (the interpreter's modules, this helper, the
    # app) lives as long as the component: out of the cycle collector's way,
    # which otherwise walks it again and again while calls allocate.
    gc.freeze()
    return fn
