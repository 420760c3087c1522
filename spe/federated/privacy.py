"""The privacy a run's rounds spend: the Gaussian mechanism the node gate applies, counted
with Rényi differential privacy (Mironov 2017) and turned into (epsilon, delta) with the
conversion of Balle et al. 2020 (the one Opacus and Google's dp-accounting use).

Each round clips a node's update to L2 norm `clip` and adds N(0, (sigma * clip)^2) to
every value: a Gaussian mechanism of sensitivity `clip` and noise multiplier sigma, whose
RDP of order a is a / (2 sigma^2). Rounds compose by adding RDP. The unit protected is a
node's whole update in a round, so what holds for it holds for any one patient behind it.
"""

from __future__ import annotations

import math

#: The RDP orders tried; the best conversion over them is reported.
ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64))
               + [80, 128, 256, 512, 1024])


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """(epsilon at `delta`) of `rounds` Gaussian mechanisms of this noise multiplier."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0 or not 0 < delta < 1:
        return math.inf
    best = math.inf
    for a in ORDERS:
        rdp = rounds * a / (2.0 * noise_multiplier ** 2)
        eps = rdp + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, eps)
    return max(best, 0.0)
