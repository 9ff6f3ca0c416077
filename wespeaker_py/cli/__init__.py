"""Command-line plumbing shared by the ``wespeaker-py`` command and the ``bin/`` entry points."""
