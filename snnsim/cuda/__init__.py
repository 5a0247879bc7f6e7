"""The fused CUDA kernels (``kernels.py``, source in ``lif_kernels.cu``): the LIF
forward and the TSSL-BP backward recursion, one thread per neuron, for CuPy."""
