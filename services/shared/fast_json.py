"""The `json` module python-socketio and engine.io use: orjson to encode, the standard library
to decode.

Encoding (every emit) is the hot side, and orjson is several times faster there; what it refuses
(integers beyond 64 bits) falls back to the standard library. Decoding stays with the standard
library on purpose: orjson reads an integer beyond 64 bits as a float, silently.
"""

import json

import orjson

loads = json.loads


def dumps(data: object, **_options: object) -> str:
    try:
        return orjson.dumps(data).decode()
    except TypeError:
        return json.dumps(data, separators=(",", ":"))
