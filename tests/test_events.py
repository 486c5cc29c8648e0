"""One dispatch of events (engine.events.EventHandler): every event kind has a method, and every
`on_` method of a consumer is reached by some event kind (a misspelt handler would be dead)."""

from __future__ import annotations

import inspect

import pytest

from engine import events as ev
from gpta_tui.dashboard import DashboardState
from gpta_tui.headless import HeadlessView
from sessions.store import SessionHandle

CONSUMERS = (HeadlessView, DashboardState, SessionHandle)


def test_every_event_kind_has_a_no_op_method_on_the_base():
    kinds = [cls.kind for cls in ev.event_classes()]
    assert len(kinds) == len(set(kinds)) and len(kinds) >= 18
    for cls in ev.event_classes():
        method = getattr(ev.EventHandler, ev.handler_name(cls), None)
        assert callable(method), f"EventHandler lacks {ev.handler_name(cls)} for {cls.__name__}"
        assert method(ev.EventHandler(), object()) is None


@pytest.mark.parametrize("consumer", CONSUMERS, ids=lambda c: c.__name__)
def test_every_handler_of_a_consumer_resolves_to_an_event_kind(consumer):
    assert issubclass(consumer, ev.EventHandler)
    reachable = {ev.handler_name(cls) for cls in ev.event_classes()}
    mine = {name for cls in consumer.__mro__ if cls not in (ev.EventHandler, object)
            for name, member in vars(cls).items()
            if name.startswith("on_") and inspect.isfunction(member)}
    stray = sorted(name for name in mine if name not in reachable)
    assert not stray, f"{consumer.__name__} has handlers no event reaches: {stray}"
    assert mine, f"{consumer.__name__} overrides no handler"


def test_handle_calls_the_method_of_the_event_kind():
    seen = []

    class Probe(ev.EventHandler):
        def on_notice(self, event, *extra):
            seen.append((event.message, extra))
            return "noticed"

    probe = Probe()
    assert probe.handle(ev.Notice(level="info", message="hi"), 7) == "noticed"
    assert probe.handle(ev.StatusChanged(status="running")) is None  # not overridden: no-op
    assert seen == [("hi", (7,))]
