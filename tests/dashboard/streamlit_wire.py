"""A Streamlit client speaking the websocket protocol itself, as a hostile visitor's script would:
binary ``BackMsg`` protobufs up, ``ForwardMsg`` down, no browser and no login.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import ClientConnection, connect

__all__ = ["WireSession", "wire_session"]

TIMEOUT = 60.0


@contextmanager
def wire_session(base_url: str, *, forwarded_for: str | None = None) -> Iterator[WireSession]:
    """A websocket session on the dashboard at ``http://host:port``, closed on exit."""
    url = base_url.replace("http://", "ws://", 1) + "/_stcore/stream"
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with connect(url, subprotocols=["streamlit"], additional_headers=headers) as socket:
        yield WireSession(socket)


class WireSession:
    """One connected session: send requests, read answers."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket

    def send(self, message: BackMsg) -> None:
        self._socket.send(message.SerializeToString())

    def until(self, done: Callable[[ForwardMsg], bool]) -> ForwardMsg:
        """Read messages until one satisfies ``done``; return it."""
        while True:
            message = ForwardMsg.FromString(self._socket.recv(timeout=TIMEOUT))
            if done(message):
                return message

    def run_script(self, widget_values: dict[str, str] | None = None) -> str:
        """Load the app as a browser does (the login page), claiming ``widget_values`` (any
        widget ids, string values); return the session's id once the run has finished."""
        return self.run_script_elements(widget_values)[0]

    def run_script_elements(
        self, widget_values: dict[str, str] | None = None
    ) -> tuple[str, list[str]]:
        """:meth:`run_script`, and the kinds of element the run drew (``text_input``, ...)."""
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        for widget_id, value in (widget_values or {}).items():
            rerun.rerun_script.widget_states.widgets.add(id=widget_id, string_value=value)
        self.send(rerun)
        session = ""
        drawn: list[str] = []
        while True:
            message = self.until(lambda m: True)
            kind = message.WhichOneof("type")
            if kind == "new_session":
                session = str(message.new_session.initialize.session_id)
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                drawn.append(str(message.delta.new_element.WhichOneof("type")))
            elif kind == "script_finished":
                return session, drawn

    def handled(self) -> None:
        """Return once the server has handled every message sent so far (a heartbeat's
        answer: one connection's messages are handled in order)."""
        self.send(BackMsg(app_heartbeat=True))
        self.until(lambda m: m.WhichOneof("type") == "heartbeat_ack")
