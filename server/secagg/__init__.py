"""The server's side of secure aggregation (SecAgg+): round planning and the round session.

The session and the planning import only ``client_sdk.secagg`` and libraries;
:mod:`~server.secagg.driver` runs a session over a Flower Grid. See ``client_sdk.secagg``
for the protocol, its stages and its departures from Bell et al.

>>> from server.secagg import ServerSession, choose_graph, plan_round
"""

from server.secagg.driver import SecureSum, secure_sum
from server.secagg.local import local_sum
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
    "SecureSum",
    "ServerSession",
    "ServerStage",
    "choose_graph",
    "local_sum",
    "plan_round",
    "secure_sum",
]
