"""A transform component written in Python, built with componentize-py against the
`transform-component` world of wit/pipeline.wit: it turns a shop's click-stream messages
(`{"user": ..., "action": ..., "at": <epoch seconds>, "page": ..., ...}`) into `streaming_events` rows.

Build:  componentize-py -d ../../wit -w transform-component componentize app -o transform.wasm
Use:    [components] transform = "examples/python-transform/transform.wasm"  in tributary.toml
"""

import json
from datetime import datetime, timezone

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Message, Rejection, Row

# Payload fields that become columns; every other field goes to `properties`.
COLUMNS = {"user", "action", "at", "page", "session"}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reject(reason: str, message: str) -> Err:
    return Err(Rejection(reason=reason, message=message))


class Transform(exports.Transform):
    def transform(self, msg: Message) -> list[Row]:
        try:
            event = json.loads(msg.data)
        except ValueError as e:
            raise reject("not-json", f"expected a JSON object payload: {e}")
        if not isinstance(event, dict):
            raise reject("not-object", f"expected a JSON object payload, got {type(event).__name__}")
        user, action = event.get("user"), event.get("action")
        if not isinstance(user, (str, int)) or not isinstance(action, str) or not action:
            raise reject("missing-field", "expected 'user' (string or number) and 'action' (string)")
        at = event.get("at")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise reject("bad-timestamp", f"expected 'at' in epoch seconds, got {at!r}")
        properties = {k: v for k, v in event.items() if k not in COLUMNS}
        properties["transformed_by"] = "python"
        properties["attributes"] = dict(msg.attributes)
        row = {
            "event_id": msg.id,
            "user_id": str(user),
            "event_type": action,
            "timestamp": rfc3339(datetime.fromtimestamp(at, timezone.utc)),
            "session_id": event.get("session"),
            "page_url": event.get("page"),
            "properties": properties,
            "publish_time": msg.publish_time,
            "message_id": msg.id,
            "processed_at": rfc3339(datetime.now(timezone.utc)),
        }
        return [Row(table="streaming_events", insert_id=msg.id, json=json.dumps(row))]
