"""``python3 -m snnsim <command> ...``: the ``snnsim`` console command (:mod:`snnsim.cli`)."""
from snnsim.cli import main
from snnsim.commandline import interpreter
from snnsim.signals import finish

finish(main(prog=f"{interpreter()} -m snnsim"))
