"""CUDA twins of the CPU kernels (numba-cuda), run by the device executor.

Every compiled CPU kernel of :mod:`nnlab.kernels` has a twin here that reads the same network
program (``ops``, ``hp``, ``tens``: :mod:`nnlab.kernels.layout`) and the same flat buffers, held
in device memory: one module per concept, as on the CPU. The executor runs a program as a
sequence of kernel launches; a layer kind's launchers are found through
:mod:`nnlab.kernels.cuda.registry`.

Nothing here is imported by ``import nnlab``: the package needs numba-cuda (``pip install
"nnlab[cuda]"``) and a GPU, or the simulator (``NUMBA_ENABLE_CUDASIM=1`` set before Numba is
first imported), and :func:`nnlab.kernels.cuda.device.cuda` says which is missing.
"""
