"""The development stack (services/devtools/stack.py) that `make run`, the tests and the benches start."""

import pytest

from services.devtools.stack import Stack
from services.devtools.stores import free_port


def stores_nobody_answers() -> dict[str, str]:
    """Redis, history and presence on ports nothing listens on: a gateway starts, never ready."""
    return {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "HISTORY_URL": f"http://127.0.0.1:{free_port()}",
            "PRESENCE_URL": f"http://127.0.0.1:{free_port()}", "LOG_LEVEL": "WARNING", "DEV_MODE": "true"}


def test_a_stack_that_fails_to_start_leaves_no_process_running(tmp_path):
    """A gateway that starts (its process runs, waiting for its stores) beside a history that
    refuses to start (development secrets outside development mode): `start` raises, and the
    gateway it had started is stopped, not left behind."""
    stack = Stack(stores_nobody_answers(), tmp_path / "logs")
    history = stack.add("history", "history", free_port(), free_port(), {"DEV_MODE": "false"})
    gateway = stack.add("gateway", "gateway-0", free_port(), free_port())

    with pytest.raises(RuntimeError, match="history exited"):
        stack.start(timeout=10)

    assert gateway.process is not None and history.process is not None  # both were started
    assert not gateway.alive() and not history.alive()


def test_a_service_that_is_not_ready_in_time_says_where_it_was(tmp_path):
    """A gateway whose Redis never answers listens but is never ready: the timeout's error
    carries its threads' stacks (SIGUSR1, services/shared/entrypoint.py), so a start that hangs
    in a test run can be read afterwards, and the process goes on."""
    stack = Stack(stores_nobody_answers(), tmp_path / "logs")
    gateway = stack.add("gateway", "gateway-0", free_port(), free_port())
    try:
        gateway.start()
        gateway.wait_ready(timeout=20, path="/healthz")  # listening: past its imports and set-up
        with pytest.raises(RuntimeError, match="not ready within 1 s") as caught:
            gateway.wait_ready(timeout=1)
        assert "most recent call first" in str(caught.value) and "run_service" in str(caught.value)
        assert gateway.alive()
    finally:
        stack.stop()
