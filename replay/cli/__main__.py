"""``python -m facta.replay.cli``: the ``facta`` command line."""

from facta.replay.cli import main

if __name__ == "__main__":
    main()
