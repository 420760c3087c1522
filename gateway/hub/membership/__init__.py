"""The federation's membership at the centre: which institution nodes the hub calls.

SPE_FEDERATION_NODES names the nodes the centre starts with; an admin adds and removes
institutions at the running centre (`POST/DELETE /api/v1/federation/nodes`, `spe
federation add|remove`), each change audited and kept in the `federation_nodes` table,
which overrides the variable: a node removed there stays removed though the variable
still names it, and one added there is called though the variable does not. The hub's
Fanout reads the merged membership (`Membership`) on every use.
"""

from gateway.hub.membership.service import Membership

__all__ = ["Membership"]
