"""``python3 -m snnsim <command> ...``: the ``snnsim`` console command (:mod:`snnsim.cli`)."""
import sys

from snnsim.cli import main

sys.exit(main(prog="python3 -m snnsim"))
