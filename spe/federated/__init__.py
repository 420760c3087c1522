"""Federated computations in rounds: the node gate, the privacy accountant, and the apps
whose steps run in the sandbox (ComBat harmonisation, Flower). See spe.wire.rounds."""
