"""The sw-hub benchmark (``python -m benchmarks`` or ``hub bench``): the floor of the primitives,
the hub in-process, the hub end to end over HTTP, and an optional soak. See ``run.py``."""
