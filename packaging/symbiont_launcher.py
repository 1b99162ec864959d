"""PyInstaller's entry script: runs as ``__main__`` in the bundle (no package context),
so it only hands over to :func:`symbiont_app.frozen_main.main`."""

import sys

from symbiont_app.frozen_main import main

if __name__ == "__main__":
    sys.exit(main())
