"""Optimizers: every rule of the family in the g_t → (m_t, v_t) → step form, run by one compiled
kernel over a flat buffer (:mod:`nnlab.kernels.optim_cpu`).

Class names, keyword names and defaults follow ``torch.optim`` where it has the optimizer; each
class docstring states its exact update rule and which convention it follows where libraries
differ (docs/optim.md has the whole table).

>>> import numpy as np, nnlab as nl
>>> W = np.ones((2, 2)); b = np.zeros(2)
>>> opt = nl.optim.Adam(lr=0.1)
>>> opt.step([W, b], [np.full((2, 2), 1e6), np.array([1e-2, -1e-2])])
>>> W.round(6), b.round(6)          # |step| = lr whatever the gradient's scale
(array([[0.9, 0.9],
       [0.9, 0.9]]), array([-0.1,  0.1]))

``opt.step_flat(p, g)`` updates one flat buffer (a network's ``_flat``); a caller with its own
compiled loop uses ``code, hp, t, state = opt.begin_flat(p)``, runs
``optim_cpu.opt_update(code, hp, t, p, g, state)`` and then ``opt.end_step()``.
"""

from ._base import REGISTRY, Optimizer, get, names
from ._optimizers import SGD, SMORMS3, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, RMSprop, Rprop

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "NAdam", "Adamax", "Rprop",
           "SMORMS3", "REGISTRY", "get", "names"]
