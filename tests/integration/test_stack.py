"""The development stack (services/devtools/stack.py) that `make run`, the tests and the benches start."""

import socket

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
    carries its threads' stacks and its asyncio tasks' awaits (SIGUSR1 and SIGUSR2,
    services/shared/entrypoint.py), so a start that hangs in a test run can be read afterwards,
    and the process goes on."""
    stack = Stack(stores_nobody_answers(), tmp_path / "logs")
    gateway = stack.add("gateway", "gateway-0", free_port(), free_port())
    try:
        gateway.start()
        gateway.wait_ready(timeout=20, path="/healthz")  # listening: past its imports and set-up
        with pytest.raises(RuntimeError, match="not ready within 1 s") as caught:
            gateway.wait_ready(timeout=1)
        dump = str(caught.value)
        assert "most recent call first" in dump and "run_service" in dump  # the threads (SIGUSR1)
        assert "in _serve" in dump and "in _listen" in dump  # the asyncio tasks' awaits (SIGUSR2)
        assert gateway.alive()
    finally:
        stack.stop()


def test_a_service_whose_port_is_taken_exits_at_once_and_says_why(tmp_path, stores):
    """A public port another process holds: the gateway exits with status 1 within its start-up,
    having closed what it had opened (services/shared/web.py: its loops, already talking to the
    real Redis, once hung in asyncio's own clean-up instead), and Stack's error carries the end
    of its log, so a failed run says why without the log file. Five starts: the hang needed a
    loop caught mid-connect."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        for attempt in range(5):
            env = {**stores_nobody_answers(), "REDIS_URL": stores.redis_url,
                   "REDIS_PREFIX": f"{stores.redis_prefix}-port-taken"}
            stack = Stack(env, tmp_path / f"logs-{attempt}")
            stack.add("gateway", "gateway-0", holder.getsockname()[1], free_port())
            with pytest.raises(RuntimeError, match="gateway-0 exited with 1") as caught:
                stack.start(timeout=20)
            assert "address already in use" in str(caught.value)
