"""An event filter written in Python (componentize-py), to show that plugin
authors need not write Rust.

It drops events below a minimum severity and hides internal notes from
subscribers who are not staff. Config (the plugin's `config` table):
`min_severity` (default 0) and `staff_role` (default "staff").

`prepare` gives each group one of two contexts, `staff` (its principal
holds `staff_role`) or empty, so `decide` is asked once per event for each
of the two at most, however many groups there are.

Build: `bash plugins/build.sh` (runs componentize-py against wit/v0.4.0,
world `event-filter`, with `plugins/python-sdk` on the path).
"""

import json
from typing import List

from fanwire_plugin import config
from wit_world import exports
from wit_world.exports import filter as f
from wit_world.imports import types

STAFF = "staff"
"""The context of groups whose principal is staff (others have "")."""


class Filter(exports.Filter):
    def prepare(self, group: types.Subscription) -> f.Verdict:
        staff_role = config().get("staff_role", "staff")
        context = STAFF if staff_role in group.principal.roles else ""
        # Reads two fields of each event, whatever else it carries.
        return f.Verdict_PerEvent(f.PerEvent(["severity", "internal_notes"], context))

    def decide(self, event: types.Event, contexts: List[str]) -> List[f.Decision]:
        min_severity = config().get("min_severity", 0)
        data = json.loads(event.data)
        severity = data.get("severity", 0) if isinstance(data, dict) else 0
        if not isinstance(severity, (int, float)) or severity < min_severity:
            reason = f"python filter: severity {severity!r} is below {min_severity}"
            return [f.Decision_Deny(reason) for _ in contexts]
        return [
            f.Decision_Allow() if context == STAFF else f.Decision_Redact(["internal_notes"])
            for context in contexts
        ]
