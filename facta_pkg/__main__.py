"""``python -m facta``: the ``facta`` command line."""

from facta.replay.cli import main

if __name__ == "__main__":
    main()
