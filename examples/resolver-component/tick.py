"""The resolver of `Subscription.tick`: the event's data with `payload`
upper-cased. A Python function compiled to a WebAssembly component by
componentize-py (`bash plugins/build.sh` -> plugins/dist/resolver-component.wasm)
and bound to the field in fanwire.toml beside this file."""

from typing import Any

from fanwire_plugin import Event, resolver


@resolver
def tick(event: Event, context: str) -> Any:
    """Called once per subscription group per event: every client with the
    same selection, arguments and principal shares the result. It reads
    nothing of the group, so it has no `prepare` and its context is empty."""
    data = event.data
    if isinstance(data, dict) and isinstance(data.get("payload"), str):
        return {**data, "payload": data["payload"].upper()}
    return data
