"""Training checkpoints: everything a :class:`~nnlab.Trainer` needs to continue a run exactly.

>>> import os, tempfile, numpy as np, nnlab as nl
>>> X, y = nl.datasets.load("xor", n=64, seed=0)
>>> def trainer():
...     net = nl.Sequential([nl.Dense(2, 8, activation="rrelu"), nl.Dense(8, 2)],
...                         loss="softmax_cross_entropy", seed=0)
...     return nl.Trainer(net, nl.optim.Adam(lr=0.05))
>>> full = trainer(); _ = full.fit(X, y, epochs=3, batch_size=16)
>>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
>>> part = trainer(); _ = part.fit(X, y, epochs=3, batch_size=16, max_steps=6, checkpoint=path)
>>> resumed = nl.load_checkpoint(path)      # stopped mid-epoch 2, after step 6
>>> history = resumed.fit(X, y, epochs=3, batch_size=16)
>>> np.array_equal(resumed.net.params()[0], full.net.params()[0]), len(history.loss)
(True, 12)

A checkpoint is one ``.npz`` archive (no pickle), written atomically like a model file. It is a
model file too (``nnlab.load`` reads its network), with these members besides ``config``,
``params`` and ``buffers``:

- ``checkpoint``: a JSON header: the nnlab version, the network's noise generator state and mode,
  the optimizer's name, hyperparameters, step count and scalar state, the trainer's clipping,
  regularizer and non-finite policy, a GradientMonitor's settings, the position of the run
  (epoch, batch, the shuffle generator's state, the data fingerprint, the fit's settings) and
  ``trainer.checkpoint_metadata``;
- ``optimizer.state.<k>``: the optimizer's state arrays;
- ``run.order``: the current epoch's row order (when the run stopped mid-epoch);
- ``history.<field>``: the run's :class:`~nnlab.History` lists as float64 arrays.
"""

import dataclasses
import math
import os

import numpy as np

from . import _files
from .errors import ModelFileError, NnlabError

FORMAT = "nnlab-checkpoint"
FORMAT_VERSION = 1
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
_HISTORY_FLOATS = ("loss", "grad_norm", "epoch_loss", "accuracy", "val_loss", "val_accuracy", "epoch_time",
                   "step_time")
_CLIP_NAMES = {1: "value", 2: "norm", 3: "global_norm"}


def _plain(value):
    """JSON-ready copies of hyperparameter values (numpy scalars, tuples)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _rng_state(rng):
    return rng.bit_generator.state


def _make_rng(state, what, path):
    if not isinstance(state, dict) or state.get("bit_generator") not in _BIT_GENERATORS:
        raise ModelFileError(f"{path}: corrupt checkpoint ({what}: not a numpy generator state)")
    try:
        bitgen = getattr(np.random, state["bit_generator"])()
        bitgen.state = state
    except Exception as exc:
        raise ModelFileError(f"{path}: corrupt checkpoint ({what}: {type(exc).__name__}: {exc})") from None
    return np.random.Generator(bitgen)


def save_checkpoint(path, trainer):
    """Write ``trainer`` (its network with buffers, optimizer state, clipping, regularizer, noise and
    shuffle generators, step and epoch counters, the position inside the current epoch, history) to
    ``path``, atomically. :func:`load_checkpoint` gives back a Trainer whose next ``fit`` with the
    same data and settings continues the run to the same bits as if it had never stopped."""
    from .trainer import Trainer

    if not isinstance(trainer, Trainer):
        raise NnlabError(f"save_checkpoint needs an nnlab Trainer; got {type(trainer).__name__}")
    from . import __version__

    net, opt = trainer.net, trainer.optimizer
    net._to_host()  # a network on a device: its parameters and the optimizer state as the device has them
    members = dict(net._members())
    sd = opt.state_dict()
    state = sd.pop("state")
    for k, arr in enumerate(state or ()):
        members[f"optimizer.state.{k}"] = np.ascontiguousarray(arr)
    sd["n_state"] = None if state is None else len(state)
    sd["hyperparams"] = {k: _plain(v) for k, v in sd["hyperparams"].items()}
    reg = trainer.regularizer
    names = {slot: name for name, slot in _regularizers().items()}
    mon = trainer.monitor
    header = {
        "format": FORMAT, "version": FORMAT_VERSION, "nnlab_version": __version__,
        "network": {"rng": _rng_state(net.rng), "training": bool(net.training),
                    "fixed_noise_seed": None if net.fixed_noise_seed is None else int(net.fixed_noise_seed)},
        "optimizer": sd,
        "trainer": {"clip": None if trainer.clip_kind == 0 else [_CLIP_NAMES[int(trainer.clip_kind)],
                                                                 float(trainer.clip_value)],
                    "regularizer": None if reg is None else [names[reg[0]], float(reg[1])],
                    "on_nonfinite": trainer.on_nonfinite,
                    "compiled_epochs": bool(trainer.compiled_epochs)},
        "monitor": None if mon is None else {"saturation_ratio": float(mon.saturation_ratio),
                                             "thresholds": dataclasses.asdict(mon.thresholds)},
        "run": None,
        "metadata": trainer.checkpoint_metadata,
    }
    run = trainer._run
    if run is not None:
        header["run"] = {
            "n": run.n, "batch_size": run.batch_size, "shuffle": run.shuffle, "seed": run.seed,
            "tbptt": run.tbptt, "fingerprint": run.fingerprint, "rng": _rng_state(run.rng),
            "epoch": run.epoch, "batch": run.batch, "total": float(run.total).hex(),
            "elapsed": float(run.elapsed), "stopped": run.history.stopped,
        }
        if run.order is not None:
            members["run.order"] = np.asarray(run.order, dtype=np.int64)
        for name in _HISTORY_FLOATS:
            members[f"history.{name}"] = np.asarray(getattr(run.history, name), dtype=np.float64)
    try:
        members["checkpoint"] = _files.json_member(header)
    except (TypeError, ValueError) as exc:
        raise NnlabError(f"cannot save checkpoint {os.fspath(path)}: trainer.checkpoint_metadata is not "
                         f"JSON-ready ({exc})") from None
    _files.write_npz(path, members)


def _regularizers():
    from .trainer import _REGULARIZERS

    return _REGULARIZERS


def _field(d, key, types, where, path, optional=False):
    if not isinstance(d, dict) or key not in d:
        if optional:
            return None
        raise ModelFileError(f"{path}: corrupt checkpoint (no '{key}' in {where})")
    value = d[key]
    if optional and value is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise ModelFileError(f"{path}: corrupt checkpoint ({where}.{key} = {value!r:.80})")
    return value


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


def load_checkpoint(path):
    """The :class:`~nnlab.Trainer` saved by :func:`save_checkpoint` (or ``Trainer.save_checkpoint``):
    its network (parameters, buffers, noise generator, mode), optimizer (hyperparameters, step
    count, state), clipping, regularizer, ``on_nonfinite`` and a fresh GradientMonitor with the
    saved settings if one was attached. When the checkpoint was taken during (or after) a
    ``fit``, the next ``fit`` with the same data, ``batch_size``, ``shuffle``, ``seed`` and
    ``tbptt`` continues that run where it stopped (``epochs`` counts the whole run, as in an
    uninterrupted call); ``fit(..., resume=False)`` starts a new one instead.

    Every malformed file raises :class:`~nnlab.errors.ModelFileError` naming the problem; sizes are
    checked from the archive's headers before anything is allocated, non-finite parameters,
    buffers or optimizer state are refused, and nothing is unpickled.
    """
    from . import diagnostics, optim
    from .network import _read_model
    from .trainer import History, Trainer, _Run

    if isinstance(path, (str, os.PathLike)):
        _files.clean_stale(path)
    with _files.NpzReader(path, kind="nnlab checkpoint") as reader:
        path = reader.path
        if "checkpoint" not in reader:
            if "config" in reader:
                raise ModelFileError(f"{path} is a model file without training state, not a checkpoint "
                                     "(load it with nnlab.load)")
            raise ModelFileError(f"{path} is not an nnlab checkpoint (no 'checkpoint' member)")
        head = reader.json("checkpoint")
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise ModelFileError(f"{path} is not an nnlab checkpoint")
        version = head.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelFileError(f"{path}: corrupt checkpoint (format version {version!r})")
        if version > FORMAT_VERSION:
            raise ModelFileError(f"{path} was written by a newer nnlab (checkpoint format {version})")
        net = _read_model(reader)

        netd = _field(head, "network", dict, "the header", path)
        net.rng = _make_rng(netd.get("rng"), "network.rng", path)
        net.training = _field(netd, "training", bool, "network", path)
        fixed = _field(netd, "fixed_noise_seed", int, "network", path, optional=True)
        if fixed is not None:
            net.fixed_noise_seed = fixed

        sd = dict(_field(head, "optimizer", dict, "the header", path))
        name = _field(sd, "name", str, "optimizer", path)
        if name not in optim.REGISTRY:
            raise ModelFileError(f"{path}: corrupt checkpoint (unknown optimizer {name!r})")
        n_state = _field(sd, "n_state", int, "optimizer", path, optional=True)
        shapes = sd.get("shapes")
        if n_state is not None:
            if not isinstance(shapes, list) or len(shapes) != n_state or n_state > 4096:
                raise ModelFileError(f"{path}: corrupt checkpoint (optimizer.shapes does not list "
                                     f"{n_state} state arrays)")
            opt = optim.REGISTRY[name]()
            try:
                opt.load_state_dict({**sd, "state": None})  # the hyperparameters, to count the state rows
            except NnlabError as exc:
                raise ModelFileError(f"{path}: corrupt checkpoint (optimizer: {exc})") from None
            state = []
            for k, entry in enumerate(shapes):
                try:
                    shape, dtype = entry
                    size = math.prod(int(d) for d in shape)
                    dtype = np.dtype(dtype)
                except Exception:
                    raise ModelFileError(f"{path}: corrupt checkpoint (optimizer.shapes[{k}] = {entry!r:.80})") from None
                if dtype != net.dtype or size != net.n_params:
                    raise ModelFileError(f"{path}: optimizer state {k} is for {size} {dtype} values; the network "
                                         f"has {net.n_params} {net.dtype.name} parameters")
                state.append(reader.array(f"optimizer.state.{k}", shape=(opt.n_slots(), size), finite=True,
                                          label=f"the optimizer state 'optimizer.state.{k}'").astype(dtype))
            sd["state"] = state
        else:
            sd["state"] = None
        sd.pop("n_state", None)
        opt = optim.REGISTRY[name]()
        try:
            opt.load_state_dict(sd)
        except NnlabError as exc:
            raise ModelFileError(f"{path}: corrupt checkpoint (optimizer: {exc})") from None
        except Exception as exc:
            raise ModelFileError(f"{path}: corrupt checkpoint (optimizer: {type(exc).__name__}: {exc})") from None

        td = _field(head, "trainer", dict, "the header", path)
        clip = _field(td, "clip", list, "trainer", path, optional=True)
        reg = _field(td, "regularizer", list, "trainer", path, optional=True)
        on_nonfinite = _field(td, "on_nonfinite", str, "trainer", path)
        md = _field(head, "monitor", dict, "the header", path, optional=True)
        try:
            monitor = None
            if md is not None:
                thresholds = diagnostics.Thresholds(**_field(md, "thresholds", dict, "monitor", path))
                monitor = diagnostics.GradientMonitor(net, saturation_ratio=md.get("saturation_ratio", 0.1),
                                                      thresholds=thresholds)
            trainer = Trainer(net, opt, clip=None if clip is None else tuple(clip),
                              regularizer=None if reg is None else tuple(reg), on_nonfinite=on_nonfinite,
                              monitor=monitor)
        except ModelFileError:
            raise
        except Exception as exc:
            raise ModelFileError(f"{path}: corrupt checkpoint (trainer: {type(exc).__name__}: {exc})") from None
        meta = _field(head, "metadata", dict, "the header", path, optional=True)
        trainer.checkpoint_metadata = meta or {}
        if td.get("compiled_epochs") is False:
            trainer.compiled_epochs = False

        rd = _field(head, "run", dict, "the header", path, optional=True)
        if rd is not None:
            history = History()
            for fname in _HISTORY_FLOATS:
                arr = reader.array(f"history.{fname}", label=f"the history member 'history.{fname}'")
                if arr.ndim != 1:
                    raise ModelFileError(f"{path}: history.{fname} must be 1-D; got shape {arr.shape}")
                setattr(history, fname, arr.astype(np.float64).tolist())
            history.stopped = _field(rd, "stopped", str, "run", path)
            n = _field(rd, "n", int, "run", path)
            batch_size = _field(rd, "batch_size", int, "run", path)
            epoch = _field(rd, "epoch", int, "run", path)
            batch = _field(rd, "batch", int, "run", path)
            if n < 1 or batch_size < 1 or epoch < 0 or not 0 <= batch <= -(-n // batch_size):
                raise ModelFileError(f"{path}: corrupt checkpoint (run position: n={n}, batch_size={batch_size}, "
                                     f"epoch={epoch}, batch={batch})")
            run = _Run(n=n, batch_size=batch_size, shuffle=_field(rd, "shuffle", bool, "run", path),
                       seed=_field(rd, "seed", int, "run", path, optional=True),
                       tbptt=_field(rd, "tbptt", int, "run", path, optional=True),
                       fingerprint=_field(rd, "fingerprint", str, "run", path),
                       rng=_make_rng(rd.get("rng"), "run.rng", path), history=history)
            run.epoch, run.batch = epoch, batch
            try:
                run.total = float.fromhex(_field(rd, "total", str, "run", path))
                run.elapsed = float(_field(rd, "elapsed", (int, float), "run", path))
            except ValueError:
                raise ModelFileError(f"{path}: corrupt checkpoint (run.total = {rd.get('total')!r:.80})") from None
            if "run.order" in reader:
                order = reader.array("run.order", dtype_kind="i", shape=(n,), label="the epoch's order 'run.order'")
                if not np.array_equal(np.sort(order), np.arange(n)):
                    raise ModelFileError(f"{path}: corrupt checkpoint (run.order is not a permutation of {n} rows)")
                run.order = order.astype(np.int64)
            elif batch:
                raise ModelFileError(f"{path}: corrupt checkpoint (stopped inside an epoch but no 'run.order')")
            trainer._restored = trainer._run = run
    return trainer
