"""facta.replay: the ``facta`` command line (``facta.replay.cli:main``, the console script)
and the demo it runs. It has no Python API of its own: everything the commands do is a
library call into the layers below, which Python code makes directly.
"""

__all__: list[str] = []
