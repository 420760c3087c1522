"""Federated queries at an institution node: a `spe.wire.query.Query` evaluated against the
node's index (`evaluate.py`). Disclosure control of the answer happens elsewhere; this
package only finds the patients."""

from gateway.node.query.evaluate import Evaluation, evaluate, matching_patients

__all__ = ["Evaluation", "evaluate", "matching_patients"]
