import os
import sys

from reports.cli import main

try:
    status = main()
    sys.stdout.flush()
except BrokenPipeError:
    # `python -m reports show DIR | head`: the reader left; not an error of ours. Point
    # stdout at devnull so the interpreter's final flush does not raise again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    status = 0
raise SystemExit(status)
