"""A Python client of the central API, for notebooks and scripts (and what the `spe`
commands that talk to the hub are built on): catalogue search, federated queries and
statistics as pandas DataFrames, permits, and jobs followed to their outputs.

Every failure is a `ClientError`: `Refused` (the hub's HTTP status and reason),
`Unreachable`, `InvalidInput` (nothing sent), `NotConfigured` (no hub or token)."""

from spe.client.client import Client
from spe.client.errors import ClientError, InvalidInput, NotConfigured, Refused, Unreachable

__all__ = ["Client", "ClientError", "InvalidInput", "NotConfigured", "Refused",
           "Unreachable"]
