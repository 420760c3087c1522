"""Rounds of federated computations at a node (spe.wire.rounds): the step in the sandbox,
the gate before anything leaves, the privacy spent per permit."""
