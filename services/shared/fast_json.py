"""JSON for the hot paths: orjson to encode, the standard library to decode.

Encoding (every emit, every answer) is the hot side, and orjson is several times faster there;
what it refuses (integers beyond 64 bits) falls back to the standard library. Decoding stays with
the standard library on purpose: orjson reads an integer beyond 64 bits as a float, silently.
`dumps` takes and ignores the standard library's options, so python-socketio and aiohttp can
call it as they call `json.dumps`; its output is always compact.
"""

import json
from functools import partial

import orjson
from aiohttp import web

loads = json.loads


def dumps(data: object, **_options: object) -> str:
    try:
        return orjson.dumps(data).decode()
    except TypeError:
        return json.dumps(data, separators=(",", ":"))


json_response = partial(web.json_response, dumps=dumps)
