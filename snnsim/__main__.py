"""``python3 -m snnsim <command> ...``: the ``snnsim`` console command (:mod:`snnsim.cli`)."""
import sys

from snnsim.cli import main
from snnsim.commandline import interpreter

sys.exit(main(prog=f"{interpreter()} -m snnsim"))
