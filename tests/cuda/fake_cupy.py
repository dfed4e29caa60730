"""A stand-in for the ``cupy`` module, enough for nnlab's cuBLAS path under the simulator: device
memory views over the simulator's arrays, ``cupy.cuda.ExternalStream`` as a context manager, and
``cupy.cublas.gemm`` doing the product with NumPy. It records every product (transposes, shapes,
alpha, beta, the stream current at the call) so tests can check the wiring. cuBLAS itself never
runs here."""

import types

import numpy as np


class FakeCupy(types.ModuleType):
    def __init__(self):
        super().__init__("cupy")
        self.__version__ = "0.0-stand-in"
        self.calls = []
        self.streams = []  # ExternalStream handles created
        self._current = [None]
        fake = self

        class UnownedMemory:
            def __init__(self, ptr, size, owner, device_id=-1):
                self.ptr, self.size, self.owner, self.device_id = ptr, size, owner, device_id

        class MemoryPointer:
            def __init__(self, mem, offset):
                self.mem, self.offset = mem, offset

        class ExternalStream:
            def __init__(self, ptr):
                self.ptr = ptr
                fake.streams.append(ptr)

            def __enter__(self):
                fake._current.append(self.ptr)
                return self

            def __exit__(self, *exc):
                fake._current.pop()
                return False

        def ndarray(shape, dtype, memptr, strides):
            view = np.asarray(memptr.mem.owner)  # the simulator's array is host memory: a view, no copy
            assert view.shape == tuple(shape) and view.dtype == dtype and view.strides == tuple(strides)
            return view

        def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
            opa = a.T if transa == "T" else a
            opb = b.T if transb == "T" else b
            fake.calls.append(dict(transa=transa, transb=transb, a=a.shape, b=b.shape, out=out.shape,
                                   alpha=alpha, beta=beta, stream=fake._current[-1]))
            prod = alpha * (opa @ opb)
            out[...] = prod if beta == 0 else prod + beta * out  # (beta 0: out is not read, as in cuBLAS)
            return out

        self.cuda = types.SimpleNamespace(UnownedMemory=UnownedMemory, MemoryPointer=MemoryPointer,
                                          ExternalStream=ExternalStream)
        self.ndarray = ndarray
        self.cublas = types.SimpleNamespace(gemm=gemm)
