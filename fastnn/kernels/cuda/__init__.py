"""CUDA kernels for the CuPy backend. Importing this package registers the ``cupy`` overrides."""
