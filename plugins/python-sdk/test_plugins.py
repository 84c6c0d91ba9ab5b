"""Unit tests of the Python plugins' code, run in CPython against the
bindings `componentize-py bindings` generates (both worlds merged): the
helper `fanwire_plugin`, the resolver of examples/resolver-component
(`tick`) and the Python filter (`app`). What the host does with a component
is tested by the host's suites; these pin what the guest code answers.

`bash plugins/build.sh --lint` runs them (python3 -m unittest), with the
bindings, this folder and the two plugins' folders on the path. The host's
imports (`host.config`, `host.log`) are stubs that raise outside a
component: each test replaces them.
"""

from __future__ import annotations

import json
import sys
import types as pytypes
import unittest
from typing import Any, Callable, List, Tuple
from unittest import mock

from componentize_py_types import Err
from wit_world.exports import filter as f
from wit_world.exports import resolver as wit
from wit_world.imports import host, types

import fanwire_plugin
from fanwire_plugin import Event, FieldCall, Principal, ResolverError, resolver

Logged = List[Tuple[host.Level, str, List[Tuple[str, str]]]]


def principal(roles: List[str] | None = None, claims: str = "{}") -> types.Principal:
    return types.Principal("u1", "t1", roles or [], claims, 1765000000)


def event(data: Any) -> types.Event:
    return types.Event("ticks:demo", json.dumps(data), "e-1", 7)


def call(arguments: str = '{"topic":"demo"}', roles: List[str] | None = None) -> wit.FieldCall:
    return wit.FieldCall("tick", arguments, "{}", principal(roles))


class HostStubs(unittest.TestCase):
    """Each test gets a config of its own and a record of what was logged."""

    config = "{}"

    def setUp(self) -> None:
        self.logged: Logged = []
        fanwire_plugin._config = None
        self.enterContext(mock.patch.object(host, "config", lambda: self.config))
        self.enterContext(
            mock.patch.object(host, "log", lambda level, message, fields: self.logged.append((level, message, fields)))
        )
        self.addCleanup(setattr, fanwire_plugin, "_config", None)


def constant(value: Any) -> Callable[[Event, str], Any]:
    """A resolver that always returns `value`."""
    return lambda e, c: value


def export(fn: Callable[[Event, str], Any], prepare: Callable[[FieldCall], str] | None = None) -> Any:
    """Exports `fn` (with `prepare`) from a fresh module, as `@resolver` in
    an app module does, and returns an instance of the `Resolver` class it
    defined there."""
    module = pytypes.ModuleType(f"app_{id(fn)}")
    sys.modules[module.__name__] = module
    fn.__module__ = module.__name__
    if prepare is None:
        resolver(fn)
    else:
        resolver(prepare=prepare)(fn)
    return module.Resolver()


def resolve(r: Any, data: Any, wire: wit.FieldCall | None = None) -> str:
    """One group's `prepare` and one event's `resolve`, as the host calls them."""
    answer: str = r.resolve(event(data), r.prepare(wire or call()))
    return answer


class ResolverTest(HostStubs):
    def test_prepare_sees_the_call_and_resolve_its_context_and_parsed_json(self) -> None:
        calls: List[FieldCall] = []
        seen: List[Tuple[Event, str]] = []

        def prepare(c: FieldCall) -> str:
            calls.append(c)
            return json.dumps({"topic": c.arguments["topic"], "subject": c.principal.subject})

        def resolve_(e: Event, context: str) -> Any:
            seen.append((e, context))
            return {**json.loads(context), "n": e.data["n"], "ok": True, "none": None}

        r = export(resolve_, prepare)
        context = r.prepare(wit.FieldCall("tick", '{"topic":"demo"}', '{"v":[1]}', principal(["staff"], '{"sub":"u1"}')))
        answers = [json.loads(r.resolve(event({"n": n}), context)) for n in (1.5, 2)]
        self.assertEqual(answers[0], {"topic": "demo", "subject": "u1", "n": 1.5, "ok": True, "none": None})
        self.assertEqual(answers[1]["n"], 2)
        [c] = calls
        self.assertEqual((c.field, c.arguments, c.variables), ("tick", {"topic": "demo"}, {"v": [1]}))
        self.assertEqual(c.principal.subject, "u1")
        self.assertEqual(c.principal.roles, ("staff",))
        self.assertTrue(c.principal.has_role("staff"))
        self.assertEqual(c.principal.claims, {"sub": "u1"})
        self.assertEqual(c.principal.expires_at, 1765000000)
        self.assertEqual(seen[0], (Event("ticks:demo", {"n": 1.5}, "e-1", 7), '{"topic": "demo", "subject": "u1"}'))

    def test_without_prepare_the_context_is_empty(self) -> None:
        seen: List[str] = []
        r = export(lambda e, context: seen.append(context))
        self.assertEqual(resolve(r, {}), "null")
        self.assertEqual(seen, [""])

    def test_a_failed_prepare_is_an_error_for_the_subscribers(self) -> None:
        def refuse(c: FieldCall) -> str:
            raise ResolverError("who are you?", "UNAUTHENTICATED")

        with self.assertRaises(Err) as raised:
            export(constant(1), refuse).prepare(call())
        self.assertEqual(raised.exception.value, types.GraphqlError("who are you?", "UNAUTHENTICATED"))

        def broken(c: FieldCall) -> str:
            return str(c.arguments["missing"])

        with self.assertRaises(Err) as raised:
            export(constant(1), broken).prepare(call())
        self.assertEqual(
            raised.exception.value, types.GraphqlError("Resolver for `tick` raised KeyError in prepare: 'missing'", None)
        )
        [(level, message, _)] = self.logged

        self.assertEqual((level, message), (host.Level.ERROR, "resolver for tick raised in prepare"))

        def not_text(c: FieldCall) -> str:
            return 42  # type: ignore[return-value]

        with self.assertRaises(Err) as raised:
            export(constant(1), not_text).prepare(call())
        self.assertEqual(raised.exception.value, types.GraphqlError("Resolver for `tick` prepare returned int; expected a str", None))

    def test_a_call_read_from_the_host_equals_one_built_by_hand(self) -> None:
        wire = wit.FieldCall("tick", '{"topic":"demo"}', "{}", principal(["staff"], '{"sub":"u1"}'))
        by_hand = FieldCall("tick", {"topic": "demo"}, {}, Principal("u1", "t1", ("staff",), {"sub": "u1"}, 1765000000))
        self.assertEqual(FieldCall.of(wire), by_hand)
        self.assertEqual(repr(FieldCall.of(wire)), repr(by_hand))
        self.assertNotEqual(FieldCall.of(call('{"topic":"other"}')), by_hand)
        with self.assertRaises(AttributeError):
            by_hand.arguments = {}  # type: ignore[misc]

    def test_any_json_value_is_a_value(self) -> None:
        for value in [None, 3, "text", [1, {"a": None}]]:
            with self.subTest(value=value):
                self.assertEqual(json.loads(resolve(export(constant(value)), {})), value)

    def test_a_resolver_error_carries_its_message_and_code(self) -> None:
        def refuse(e: Event, c: str) -> Any:
            raise ResolverError("no tick for you", "FORBIDDEN_TICK")

        with self.assertRaises(Err) as raised:
            resolve(export(refuse), {})
        self.assertEqual(raised.exception.value, types.GraphqlError("no tick for you", "FORBIDDEN_TICK"))

        def plain(e: Event, c: str) -> Any:
            raise ResolverError("plain")

        with self.assertRaises(Err) as raised:
            resolve(export(plain), {})
        self.assertEqual(raised.exception.value, types.GraphqlError("plain", None))

    def test_another_exception_is_logged_and_named_to_the_subscribers(self) -> None:
        def missing(e: Event, c: str) -> Any:
            return e.data["missing"]

        with self.assertRaises(Err) as raised:
            resolve(export(missing), {})
        self.assertEqual(raised.exception.value, types.GraphqlError("Resolver for `tick` raised KeyError: 'missing'", None))
        [(level, message, fields)] = self.logged
        self.assertEqual((level, message), (host.Level.ERROR, "resolver for tick raised"))
        self.assertEqual(fields[0][0], "traceback")
        self.assertIn("KeyError: 'missing'", fields[0][1])

    def test_a_value_that_is_not_json_is_an_error(self) -> None:
        for value, detail in [({1, 2}, "Object of type set is not JSON serializable"), (float("nan"), "not JSON compliant")]:
            with self.subTest(value=value):
                with self.assertRaises(Err) as raised:
                    resolve(export(constant(value)), {})
                error = raised.exception.value
                self.assertIsInstance(error, types.GraphqlError)
                self.assertTrue(error.message.startswith("Resolver for `tick` returned a value that is not JSON: "), error.message)
                self.assertIn(detail, error.message)
                self.assertIsNone(error.code)

    def test_a_value_that_failed_does_not_spoil_the_next(self) -> None:
        # The encoder marks the containers it is inside of; a failure half-way
        # must not leave `outer` marked as a circular reference.
        outer: List[Any] = [[1], {1, 2}]
        r = export(lambda e, c: outer)
        with self.assertRaises(Err):
            resolve(r, {})
        outer.pop()
        self.assertEqual(resolve(r, {}), "[[1]]")

    def test_data_with_whitespace_or_not_json_reads_as_json_loads_does(self) -> None:
        self.assertEqual(Event.of(types.Event("t", ' {"a": [1, 2]}\n', None, None)).data, {"a": [1, 2]})
        self.assertEqual(Event.of(types.Event("t", "[]", None, None)).data, [])
        for text in ["", "{", '{"a":1} x']:
            with self.subTest(text=text):
                with self.assertRaises(json.JSONDecodeError):
                    Event.of(types.Event("t", text, None, None))

    def test_one_resolver_per_module(self) -> None:
        def first(e: Event, c: str) -> Any:
            return None

        export(first)

        def second(e: Event, c: str) -> Any:
            return None

        second.__module__ = first.__module__
        with self.assertRaisesRegex(TypeError, "defines `Resolver` already"):
            resolver(second)


class HostTest(HostStubs):
    config = '{"min_severity": 2, "nested": {"a": [1]}}'

    def test_config_is_the_parsed_table_read_once(self) -> None:
        self.assertEqual(fanwire_plugin.config(), {"min_severity": 2, "nested": {"a": [1]}})
        self.config = "{}"
        self.assertEqual(fanwire_plugin.config()["min_severity"], 2)

    def test_log_passes_level_message_and_fields(self) -> None:
        fanwire_plugin.log("debug", "seen", topic="ticks:demo", n="1")
        self.assertEqual(self.logged, [(host.Level.DEBUG, "seen", [("topic", "ticks:demo"), ("n", "1")])])


class ExampleTest(HostStubs):
    """examples/resolver-component/tick.py"""

    def test_payload_is_upper_cased_and_the_rest_kept(self) -> None:
        import tick

        r = getattr(tick, "Resolver")()  # defined by @resolver
        data = {"seq": 1, "topic": "demo", "sentAt": 1.25, "payload": "hello, fanwire"}
        self.assertEqual(json.loads(resolve(r, data)), {**data, "payload": "HELLO, FANWIRE"})
        for unchanged in [{"seq": 2, "payload": None}, {"seq": 3}, "not an object"]:
            with self.subTest(data=unchanged):
                self.assertEqual(json.loads(resolve(r, unchanged)), unchanged)


class FilterTest(HostStubs):
    """plugins/python-filter/app.py"""

    config = '{"min_severity": 2, "staff_role": "ops"}'

    def group(self, roles: List[str]) -> types.Subscription:
        return types.Subscription("alerts", "alerts", "{}", "{}", None, ["alerts.severity"], principal(roles))

    def test_staff_and_others_get_one_context_each(self) -> None:
        import app

        filter_ = app.Filter()
        fields = ["severity", "internal_notes"]
        self.assertEqual(filter_.prepare(self.group(["ops"])), f.Verdict_PerEvent(f.PerEvent(fields, "staff")))
        self.assertEqual(filter_.prepare(self.group(["staff"])), f.Verdict_PerEvent(f.PerEvent(fields, "")))
        self.assertEqual(
            filter_.decide(event({"severity": 3, "internal_notes": "n"}), ["staff", ""]),
            [f.Decision_Allow(), f.Decision_Redact(["internal_notes"])],
        )
        self.assertEqual(
            filter_.decide(event({"severity": 1}), ["staff", ""]),
            [f.Decision_Deny("python filter: severity 1 is below 2")] * 2,
        )
        self.assertEqual(
            filter_.decide(event("not an object"), [""]),
            [f.Decision_Deny("python filter: severity 0 is below 2")],
        )


if __name__ == "__main__":
    unittest.main()
