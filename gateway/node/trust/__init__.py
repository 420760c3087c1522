"""Who a node takes calls from: the hub (its certificate and its signed, single-use
contexts) and its own operator (its own certificate and a bearer token), never another
member of the federation; and the central suspension list the hub pushes to it."""

from gateway.node.trust.door import HubCall, HubCaller, OperatorCaller, TokenCaller

__all__ = ["HubCall", "HubCaller", "OperatorCaller", "TokenCaller"]
