"""Every Redis key and channel name Parley uses, built in one place."""


def sio_channel(prefix: str) -> str:
    """The Socket.IO pub/sub channel that gateways, history and presence share."""
    return f"{prefix}:socketio"


def user_room(user_id: str) -> str:
    """The Socket.IO room holding every socket (tab, device, node) of one user."""
    return f"user:{user_id}"
