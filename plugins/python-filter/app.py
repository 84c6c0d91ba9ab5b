"""An event filter written in Python (componentize-py), to show that plugin
authors need not write Rust.

It drops events below a minimum severity and hides internal notes from
subscribers who are not staff. Config (the plugin's `config` table):
`min_severity` (default 0) and `staff_role` (default "staff").

Build: `bash plugins/build.sh` (runs componentize-py against wit/v0.1.0,
world `event-filter`).
"""

import json
from typing import Any, Dict, List, Optional

from wit_world import exports
from wit_world.exports import filter as f
from wit_world.imports import host, types

_config: Optional[Dict[str, Any]] = None


def config() -> Dict[str, Any]:
    """The plugin's config, read on first use: imports cannot be called
    while componentize-py pre-initialises the module at build time."""
    global _config
    if _config is None:
        _config = json.loads(host.config() or "{}")
    return _config


class Filter(exports.Filter):
    def prepare(self, group: types.Subscription) -> f.Verdict:
        # Reads two fields of each event, whatever else it carries.
        return f.Verdict_PerEvent(["severity", "internal_notes"])

    def decide(self, event: types.Event, groups: List[types.Subscription]) -> List[f.Decision]:
        min_severity = config().get("min_severity", 0)
        staff_role = config().get("staff_role", "staff")
        data = json.loads(event.data)
        severity = data.get("severity", 0) if isinstance(data, dict) else 0
        if not isinstance(severity, (int, float)) or severity < min_severity:
            reason = f"python filter: severity {severity!r} is below {min_severity}"
            return [f.Decision_Deny(reason) for _ in groups]
        decisions: List[f.Decision] = []
        for group in groups:
            if staff_role in group.principal.roles:
                decisions.append(f.Decision_Allow())
            else:
                decisions.append(f.Decision_Redact(["internal_notes"]))
        return decisions
