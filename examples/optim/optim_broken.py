"""CS231n's optim.py with one planted mistake: Adam's epsilon inside the square root.

It shows only where epsilon is not negligible against the bias-corrected second moment
(small gradients, or a large epsilon): the check's hypothesis search finds such a case and
shrinks it. The other rules are optim.py's.
"""

import numpy as np


def adam(w, dw, config=None):
    config = config if config is not None else {}
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("m", np.zeros_like(w))
    config.setdefault("v", np.zeros_like(w))
    config.setdefault("t", 0)
    b1, b2 = config["beta1"], config["beta2"]
    config["t"] += 1
    config["m"] = b1 * config["m"] + (1 - b1) * dw
    config["v"] = b2 * config["v"] + (1 - b2) * dw**2
    m_hat = config["m"] / (1 - b1 ** config["t"])
    v_hat = config["v"] / (1 - b2 ** config["t"])
    next_w = w - config["learning_rate"] * m_hat / np.sqrt(v_hat + config["epsilon"])  # the mistake
    return next_w, config
