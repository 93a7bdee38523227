"""The development stack (services/devtools/stack.py) that `make run`, the tests and the benches start."""

import pytest

from services.devtools.stack import Stack
from services.devtools.stores import free_port


def test_a_stack_that_fails_to_start_leaves_no_process_running(tmp_path):
    """A gateway that starts (its process runs, waiting for its stores) beside a history that
    refuses to start (development secrets outside development mode): `start` raises, and the
    gateway it had started is stopped, not left behind."""
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "HISTORY_URL": f"http://127.0.0.1:{free_port()}",
           "PRESENCE_URL": f"http://127.0.0.1:{free_port()}", "LOG_LEVEL": "WARNING", "DEV_MODE": "true"}
    stack = Stack(env, tmp_path / "logs")
    history = stack.add("history", "history", free_port(), free_port(), {"DEV_MODE": "false"})
    gateway = stack.add("gateway", "gateway-0", free_port(), free_port())

    with pytest.raises(RuntimeError, match="history exited"):
        stack.start(timeout=10)

    assert gateway.process is not None and history.process is not None  # both were started
    assert not gateway.alive() and not history.alive()
