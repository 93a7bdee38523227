"""Parley's one JSON codec: orjson to encode, the standard library to decode.

Every decoder in Parley uses `loads`: REST request bodies (`web.json_body`), the internal HTTP
client's answers, the routed manager's pub/sub messages, and (as python-socketio's `json`
module) the gateway's Socket.IO packets.

Encoding (every emit, every answer) is the hot side, and orjson is several times faster there;
what it refuses (integers beyond 64 bits, which it raises on) falls back to the standard
library, so `dumps` always succeeds on what JSON can carry (Socket.IO packets and routed emits
fall back the same way). The internal client encodes its requests with orjson alone and raises
its TypeError for such an integer before sending anything: it sends validated models, which
hold none.

Decoding stays with the standard library on purpose: orjson reads an integer beyond 64 bits as
a float, silently (orjson 3.13: 2**70 comes back as 1.1805916207174113e+21), and the standard
library reads it exactly. The price, timed with timeit on the development machine: 66.7
against 30.6 us for a pub/sub message of 14 routed emits, 65.3 against 29.6 us for a store
answer of 23 messages, about 0.004 ms a delivered message, under 1 % of the whole system's
0.466 CPU-ms at 3,000 msg/s (bench/RESULTS.md, "Delivery").

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
