"""Training entry points per optimizer: ``train_step`` and ``train_epoch`` compiled with one update rule.

:func:`nnlab.kernels.cpu.train_step` takes the optimizer as an integer code and dispatches on it at
run time (:func:`nnlab.kernels.optim_cpu.opt_update`), so compiling it compiles every optimizer's
update loops (nine rules, each with its plain, float32 and general loops), and its ``record``
branch compiles the gradient-health statistics of a monitor, although a step uses one optimizer and
most steps record nothing. :func:`variant` gives the same entry points with one rule and, without
``r``, no statistics -- named ``train_step_o<code>`` (no monitor), ``train_step_o<code>r`` (a
monitor records) and ``train_epoch_o<code>`` (:meth:`nnlab.Trainer.fit`'s compiled epochs never
record) -- as attributes of the kernel set (``ks.train_step_o0`` is SGD's step), which
:class:`nnlab.Trainer` chooses by its optimizer's code (:func:`step_name`, :func:`epoch_name`).

They are the functions' own bytecode with other globals: ``opt_update`` and ``opt_update_checked``
call only the rule of ``<code>`` (the other rules' names are bound to :func:`skip_update`, which is
never reached: the variant is only called with its own code), and ``grad_stats``/``update_stats``
are bound to stubs in the copies without ``r`` (which are only called with ``record`` False). So
the results are the same bits as the general entry point's. Each copy is cached under its own name
beside the function it copies, like the executors per group of layer kinds.
"""

import re
import types

from numba import njit

from .._config import JIT
from . import optim_cpu

# optimizer code -> the name of its update loop in optim_cpu (opt_update's branches)
UPDATES = {
    optim_cpu.SGD: "sgd_update",
    optim_cpu.ADAGRAD: "adagrad_update",
    optim_cpu.ADADELTA: "adadelta_update",
    optim_cpu.RMSPROP: "rmsprop_update",
    optim_cpu.ADAM: "adam_update",
    optim_cpu.NADAM: "nadam_update",
    optim_cpu.ADAMAX: "adamax_update",
    optim_cpu.RPROP: "rprop_update",
    optim_cpu.SMORMS3: "smorms3_update",
}

_NAME = re.compile(r"^(train_step|train_epoch)_o(\d+)(r?)$")


@njit(**JIT)
def skip_update(hp, t, p, g, state):
    """Stands in for the update rules a per-optimizer entry point does not dispatch to."""
    return


@njit(**JIT)
def no_grad_stats(ops, hp, tens, params, grads, ws, dws, n, sat, stats):
    """Stands in for ``grad_stats`` in the entry points that never record."""
    return


@njit(**JIT)
def no_update_stats(ops, params, prev, stats):
    """Stands in for ``update_stats`` in the entry points that never record."""
    return


def step_name(code, record):
    """The attribute of a kernel set with the training step for optimizer ``code`` (``record``: a
    monitor records statistics): the per-optimizer step for the first optimizer this process steps
    with, the general ``train_step`` (every rule) for any other (see :data:`FIRST`)."""
    record = bool(record)
    if FIRST.setdefault(record, code) != code:
        return "train_step"
    return _STEP_NAMES[record].get(code, "train_step")


def epoch_name(code):
    """The attribute of a kernel set with the compiled epoch for optimizer ``code`` (as
    :func:`step_name`)."""
    if FIRST.setdefault("epoch", code) != code:
        return "train_epoch"
    return _EPOCH_NAMES.get(code, "train_epoch")


FIRST = {}
"""The optimizer code a process first trained with, per kind of entry point (a step without and
with statistics, an epoch). A process that trains with one optimizer (a script, most commands and
demos) compiles its update rule alone; one that compares several (``nnlab demo optimizers``, a
sweep over optimizers) compiles the first one's step and then the general step, which covers every
other: two compiles at most, where one step per optimizer would cost a full compile each."""

def several_optimizers():
    """Tell the Trainers of this process that it trains with several optimizers: from now on they
    take the general entry points (every rule: one compile for all), not one per optimizer."""
    FIRST.update({False: None, True: None, "epoch": None})


_STEP_NAMES = ({c: f"train_step_o{c}" for c in UPDATES}, {c: f"train_step_o{c}r" for c in UPDATES})
_EPOCH_NAMES = {c: f"train_epoch_o{c}" for c in UPDATES}


def _copy(dispatcher, globs, suffix):
    """``dispatcher``'s function with globals ``globs``, jitted with its options and cached under its
    name + ``suffix``."""
    py = dispatcher.py_func
    fn = types.FunctionType(py.__code__, globs, py.__name__ + suffix, py.__defaults__, py.__closure__)
    fn.__qualname__ = py.__qualname__ + suffix  # the name of its cache files
    fn.__doc__ = py.__doc__
    opts = {k: v for k, v in dispatcher.targetoptions.items() if k != "nopython"}
    return njit(fn, cache=True, **opts)  # cache is not a target option: asked for again


_updates = {}


def _opt_updates(code):
    """(opt_update, opt_update_checked) with the update rule of ``code`` only (shared by every
    kernel set: they do not reach the layer kernels)."""
    pair = _updates.get(code)
    if pair is None:
        globs = dict(optim_cpu.__dict__)
        for c, name in UPDATES.items():
            if c != code:
                globs[name] = skip_update
        update = globs["opt_update"] = _copy(optim_cpu.opt_update, globs, f"_o{code}")
        checked = globs["opt_update_checked"] = _copy(optim_cpu.opt_update_checked, globs, f"_o{code}")
        pair = _updates[code] = (update, checked)
    return pair


def variant(globs, name, store):
    """The entry point ``name`` (``train_step_o<code>[r]`` or ``train_epoch_o<code>``) of the kernel
    set whose functions see the globals ``globs``, made on first use and kept in ``store`` (a
    dict); AttributeError for any other name. The copies are cached under the name of the function
    they copy (``train_step_k2``: the dense executor's) + ``_o<code>[r]``."""
    fn = store.get(name)
    if fn is not None:
        return fn
    m = _NAME.match(name)
    if m is None or int(m.group(2)) not in UPDATES or (m.group(1) == "train_epoch" and m.group(3)):
        raise AttributeError(f"kernel set has no attribute {name!r}")
    base, code, record = m.group(1), int(m.group(2)), bool(m.group(3))
    if base == "train_epoch":  # the step it inlines, with the one rule and no statistics
        step = _copy(globs["train_step_inline"], _step_globals(globs, code, False), f"_o{code}")
        fn = _copy(globs["train_epoch"], dict(globs, train_step_inline=step), f"_o{code}")
    else:
        fn = _copy(globs["train_step"], _step_globals(globs, code, record), f"_o{code}{'r' if record else ''}")
    store[name] = fn
    return fn


def _step_globals(globs, code, record):
    """The globals of a step with the rule of ``code`` only (and, without ``record``, no statistics)."""
    update, checked = _opt_updates(code)
    g = dict(globs, opt_update=update, opt_update_checked=checked)
    if not record:
        g.update(grad_stats=no_grad_stats, update_stats=no_update_stats)
    return g
