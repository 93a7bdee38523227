"""`python -m services.gateway`: one gateway node."""

import gc

from ..shared.entrypoint import serve
from .app import create_app
from .settings import GatewaySettings

# Python's collector, tuned for a node holding many long-lived sockets. By default (700, 10, 10)
# a connect storm of 5,000 sockets a node ran 930 young and 7 full collections, the full ones
# 0.25 s each (every socket's objects scanned again): 2.2 s of the node's CPU. With the code
# loaded at start frozen (never scanned again) and young collections every 20,000 allocations,
# the same storm ran 30 young collections, one middle, no full one: 0.5 s
# (`python -m bench.presence_bench --sockets 10000`, gc.callbacks timing each collection; load
# average 2.5 to 3.4). Cyclic garbage waits longer to be freed: at most 20,000 objects' worth.
GC_THRESHOLDS = (20_000, 20, 20)

if __name__ == "__main__":
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    serve("gateway", GatewaySettings, create_app)
