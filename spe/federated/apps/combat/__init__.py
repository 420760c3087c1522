"""Distributed ComBat harmonisation: the step that runs at each node (`step.py`, with
`site.py` and `features.py` beside it in the sandbox's /code); the centre's part is
spe.federated.combat."""
