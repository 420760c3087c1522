"""What the central app and the node apps share: context, sessions, access control."""

from spe.web.access import Caller, authorize
from spe.web.context import AppContext, get_context
from spe.web.deps import DbSession

__all__ = ["AppContext", "Caller", "DbSession", "authorize", "get_context"]
