"""torch.optim for the optimiser registry (reference/optim_registry.py): one update fed our
state, and K training steps of any spec network with torch's own loop.

State is exchanged under the reference's names (velocity, cache, m, v, t), in torch's own
convention (reference.optim.TORCH): torch's momentum buffer is the velocity of O4/O6, its
square_avg the cache of O8, exp_avg/exp_avg_sq/step Adam's m, v, t.

    make(name, h, params) -> torch.optim.Optimizer
    step(name, p, g, state, h) -> (p', state')            # stage-isolated, one parameter
    train(net, params, batches, reduction, name, h) -> [per step {name: array}]
"""

from __future__ import annotations

import torch

from parity_tests.mirrors.model_torch import _np, _t

# reference state name -> torch's key in optimizer.state[p]
_KEYS = {"velocity": "momentum_buffer", "cache": "square_avg", "m": "exp_avg", "v": "exp_avg_sq"}


def make(name: str, h: dict, params) -> torch.optim.Optimizer:
    """The torch optimiser of registry entry `name` with hyper-parameters `h`."""
    wd = h.get("weight_decay", 0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=h["lr"], weight_decay=wd)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(
            params, lr=h["lr"], momentum=h["momentum"], nesterov=name == "nesterov", weight_decay=wd
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=h["lr"], alpha=h["rho"], eps=h["eps"], weight_decay=wd)
    if name in ("adam", "adamw"):
        kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        betas = (h["beta1"], h["beta2"])
        return kind(params, lr=h["lr"], betas=betas, eps=h["eps"], weight_decay=wd)
    raise ValueError(f"no torch optimiser for {name!r}")


def _load(opt, p, state: dict) -> None:
    """Our state into torch's: left empty before the first step, as torch starts."""
    if not state or state.get("t", 1) == 0:
        return
    s = {_KEYS[k]: _t(v) for k, v in state.items() if k != "t"}
    if "t" in state:
        s["step"] = torch.tensor(float(state["t"]), dtype=torch.float32)
    elif "square_avg" in s:
        s["step"] = torch.tensor(1.0, dtype=torch.float32)  # RMSprop counts; O8 does not read it
    opt.state[p] = s


def _read(opt, p, names) -> dict:
    s = opt.state[p]
    out = {}
    for k in names:
        if k == "t":
            out["t"] = int(s["step"].item())
        else:
            out[k] = _np(s[_KEYS[k]])
    return out


def state_names(name: str) -> tuple:
    from reference.optim_registry import optimiser

    return optimiser(name).state


def step(name: str, p, g, state: dict, h: dict):
    """One update of torch's optimiser fed our parameter, gradient and state: (p', state')."""
    w = torch.nn.Parameter(_t(p))
    w.grad = _t(g)
    opt = make(name, h, [w])
    _load(opt, w, state)
    opt.step()
    return _np(w), _read(opt, w, state_names(name))


def train(net, params, batches, reduction, name: str, h: dict) -> list:
    """K steps of torch's own loop from `params`: per batch (X, target), forward, loss,
    E.backward(), opt.step(). Per step: the loss E (before the update), every parameter
    after it ("<param>_new") and every state ("<param>.<state>")."""
    from parity_tests.mirrors.model_torch import forward

    weights = {n: torch.nn.Parameter(_t(params[n])) for n in net.param_names}
    opt = make(name, h, list(weights.values()))
    names = state_names(name)
    out = []
    for X, target in batches:
        opt.zero_grad()
        tensors, _ = forward(net, weights, X, target, reduction)
        E = tensors[net.nodes[-1].q("E")]
        E.backward()
        opt.step()
        row = {"E": float(E.detach())}
        for n, w in weights.items():
            row[f"{n}_new"] = _np(w)
            for k, v in _read(opt, w, names).items():
                row[f"{n}.{k}"] = v
        out.append(row)
    return out


def version() -> str:
    return torch.__version__
