"""Federated computations in rounds, driven by the hub: ComBat harmonisation and Flower
apps under a data permit (spe.wire.rounds for the wire; the nodes gate every update)."""
