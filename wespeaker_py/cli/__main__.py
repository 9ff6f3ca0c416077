"""``python -m wespeaker_py.cli``: the ``wespeaker-py`` command (:mod:`.main`)."""
from wespeaker_py.cli.main import main

main()
