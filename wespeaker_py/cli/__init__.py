"""The command lines: :mod:`.common` (flags and exit statuses, shared with ``bin/``) and
:mod:`.main` (the ``wespeaker-py`` command). Nothing here imports ``wespeaker_py.bin``."""
