"""The server's side of secure aggregation (SecAgg+): round planning and the round session.

Imports only ``client_sdk.secagg`` and libraries, so it can move with the protocol. See
``client_sdk.secagg`` for the protocol, its stages and its departures from Bell et al.

>>> from server.secagg import ServerSession, choose_graph, plan_round
"""

from server.secagg.planning import (
    DEFAULT_COLLUSION_FRACTION,
    DEFAULT_DROPOUT_FRACTION,
    GraphChoice,
    choose_graph,
    plan_round,
)
from server.secagg.session import ServerSession, ServerStage

__all__ = [
    "DEFAULT_COLLUSION_FRACTION",
    "DEFAULT_DROPOUT_FRACTION",
    "GraphChoice",
    "ServerSession",
    "ServerStage",
    "choose_graph",
    "plan_round",
]
