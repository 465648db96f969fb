"""The bundle's entry point: ``omicslab`` as the installed command, plus multiprocessing's frozen hook.

Training runs in a spawned child process; in a frozen bundle that child is this same executable started
again, and ``freeze_support()`` is what turns it into the worker instead of a second window.
"""

import multiprocessing

from app.__main__ import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    raise SystemExit(main())
