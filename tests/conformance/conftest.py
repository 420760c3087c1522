"""The federation of tests/gateway (a hub and three nodes over mutual TLS) for the
conformance tests: the same fixtures, imported rather than copied."""

from tests.gateway.conftest import node_dbs, node_servers, pki  # noqa: F401
from tests.gateway.test_federation import federation  # noqa: F401
