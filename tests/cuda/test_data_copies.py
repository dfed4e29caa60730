"""What ``fit`` copies to the device: the training and validation sets once per fit (the batches
are gathered on the device, the epochs' evaluation reads the same copy), with the same bits as
copying every batch from the host."""

import numpy as np
import pytest

import nnlab as nl
from nnlab.kernels.cuda import executor


class CountingCuda:
    """``numba.cuda`` with every ``to_device`` recorded as (dtype, shape) of the host array."""

    def __init__(self, real):
        self._real = real
        self.uploads = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def to_device(self, ary, *args, **kwargs):
        self.uploads.append((np.dtype(ary.dtype), tuple(ary.shape)))
        return self._real.to_device(ary, *args, **kwargs)


def _data(n=10, k=3):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(n, k)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y


def _fit(monkeypatch, hold, epochs=3, monitor=False, validation_split=0.0):
    if not hold:  # the batches copied from the host one by one, as Trainer.step copies them
        monkeypatch.setattr(executor.DeviceExecutor, "hold", lambda self, *arrays: None)
    X, y = _data()
    net = nl.Sequential([nl.Dense(3, 5, activation="tanh"), nl.Dense(5, 2)], loss="softmax_cross_entropy",
                        seed=5, dtype="float32", device="cuda")
    counter = CountingCuda(net._dev.cuda)
    net._dev.cuda = counter
    mon = nl.GradientMonitor(net) if monitor else None
    tr = nl.Trainer(net, nl.optim.Adam(lr=0.05), monitor=mon)
    h = tr.fit(X, y, epochs=epochs, batch_size=4, seed=0, validation_split=validation_split)
    monkeypatch.undo()
    return net, h, counter.uploads, X


def _float_rows(uploads, width):
    """Rows of float32 arrays of ``width`` columns uploaded (2-D), or elements/width of flat ones."""
    rows = 0
    for dt, shape in uploads:
        if dt == np.float32 and len(shape) == 2 and shape[1] == width:
            rows += shape[0]
        elif dt == np.float32 and len(shape) == 1 and shape[0] % width == 0:
            rows += shape[0] // width
    return rows


@pytest.mark.parametrize("monitor", [False, True])
def test_fit_uploads_the_training_set_once_with_the_same_bits(monkeypatch, monitor):
    epochs = 3
    net_a, ha, up_a, X = _fit(monkeypatch, hold=False, epochs=epochs, monitor=monitor)
    net_b, hb, up_b, _ = _fit(monkeypatch, hold=True, epochs=epochs, monitor=monitor)
    n, k = X.shape
    steps = epochs * -(-n // 4)
    assert len(hb.loss) == len(ha.loss) == steps
    np.testing.assert_array_equal(hb.loss, ha.loss)
    np.testing.assert_array_equal(hb.grad_norm, ha.grad_norm)
    assert hb.accuracy == ha.accuracy
    for p, q in zip(net_a.params(), net_b.params()):
        np.testing.assert_array_equal(q, p)
    # copied from the host every step and every evaluation: the training rows, once per epoch or more
    assert _float_rows(up_a, k) >= epochs * n
    # held: X once (its (n, k) copy), and no other float32 array of k columns
    assert _float_rows(up_b, k) == n
    assert (np.dtype(np.float32), (n, k)) in up_b
    # the row order crosses once per epoch (n int64s), never per step
    orders = [s for dt, s in up_b if dt == np.int64 and s == (n,)]
    assert len(orders) == epochs
    assert net_b._dev._held == {}  # released at the end of the fit


def test_validation_set_is_held_too(monkeypatch):
    net, h, uploads, X = _fit(monkeypatch, hold=True, epochs=2, validation_split=0.3)
    n, k = X.shape
    n_val = int(round(0.3 * n))
    assert len(h.val_loss) == 2
    assert _float_rows(uploads, k) == n  # training rows and validation rows, each once
    assert (np.dtype(np.float32), (n - n_val, k)) in uploads
    assert (np.dtype(np.float32), (n_val, k)) in uploads


def test_a_failed_fit_releases_the_data(monkeypatch):
    X, y = _data()
    net = nl.Sequential([nl.Dense(3, 2)], loss="softmax_cross_entropy", seed=0, device="cuda")
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.1))

    def stop(epoch, step, loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.fit(X, y, epochs=2, batch_size=4, step_callback=stop)
    assert net._dev._held == {}


def test_no_room_on_the_device_falls_back_to_copying_each_batch(monkeypatch):
    """When the data sets do not fit in device memory, fit copies each batch from the host: the
    same bits as the held run."""
    X, y = _data()
    runs = []
    for full in (False, True):
        net = nl.Sequential([nl.Dense(3, 2)], loss="softmax_cross_entropy", seed=0, dtype="float32", device="cuda")
        if full:
            real = net._dev.cuda

            class Full(CountingCuda):
                def to_device(self, ary, *args, **kwargs):
                    if ary.shape == X.shape:
                        raise MemoryError("out of device memory")
                    return super().to_device(ary, *args, **kwargs)

            net._dev.cuda = Full(real)
        h = nl.Trainer(net, nl.optim.SGD(lr=0.1)).fit(X, y, epochs=2, batch_size=4, seed=0)
        runs.append((net, h))
        assert net._dev._held == {}
    (a, ha), (b, hb) = runs
    np.testing.assert_array_equal(hb.loss, ha.loss)
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_array_equal(q, p)
    assert _float_rows(b._dev.cuda.uploads, X.shape[1]) >= 2 * X.shape[0]  # every batch and evaluation copied
