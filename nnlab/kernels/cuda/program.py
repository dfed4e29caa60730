"""A network program on the device: the tables on the host and on the device, the flat buffers
in device memory, and views of its tensors (the CUDA side of :mod:`nnlab.kernels.layout`)."""

import numpy as np


class DeviceProgram:
    """What every launcher gets.

    Attributes: ``ops``, ``hp``, ``tens`` (host NumPy arrays: launchers read offsets, widths and
    hyperparameters from them in Python to size their launches) and ``d_ops``, ``d_hp``,
    ``d_tens`` (the same tables on the device, for kernels that read them); ``dtype`` (float32 or
    float64); ``params`` (the parameter store: the parameters then the buffers), ``grads``, ``ws``,
    ``dws`` (1-D device arrays of ``dtype``; the workspace sized for ``rows`` batch rows);
    ``stream`` (the CUDA stream every launch of the program uses).
    """

    def __init__(self, cuda, ops, hp, tens, params, grads, ws, dws, stream=None):
        self.cuda = cuda
        self.ops = np.ascontiguousarray(ops, np.int64)
        self.hp = np.ascontiguousarray(hp, np.float64)
        self.tens = np.ascontiguousarray(tens, np.int64)
        self.stream = stream if stream is not None else cuda.default_stream()
        self.d_ops = cuda.to_device(self.ops, stream=self.stream)
        self.d_hp = cuda.to_device(self.hp, stream=self.stream)
        self.d_tens = cuda.to_device(self.tens, stream=self.stream)
        self.params = params
        self.grads = grads
        self.ws = ws
        self.dws = dws
        self.dtype = np.dtype(params.dtype)

    def flat(self, buf, t, n):
        """Tensor ``t`` of an ``n``-row batch as a flat device view of ``buf`` (ws or dws)."""
        off = int(self.tens[t, 0]) * n
        return buf[off:off + n * int(self.tens[t, 1])]

    def view(self, buf, t, n):
        """Tensor ``t`` of an ``n``-row batch as an (n, width) device view (``common.tview``)."""
        w = int(self.tens[t, 1])
        return self.flat(buf, t, n).reshape(n, w)

    def rview(self, buf, t, n, steps):
        """Tensor ``t`` as (n·steps, width/steps): one row per (batch row, step) (``common.rview``)."""
        w = int(self.tens[t, 1])
        return self.flat(buf, t, n).reshape(n * steps, w // steps)
