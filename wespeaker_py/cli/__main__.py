"""``python -m wespeaker_py.cli``: the ``wespeaker-py`` command (:mod:`.main`)."""
from wespeaker_py.cli.main import main

if __name__ == "__main__":   # not on import: tests walk every module of the package
    main()
