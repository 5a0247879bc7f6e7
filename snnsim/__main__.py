"""``python3 -m snnsim <command> ...``: the ``snnsim`` console command (:mod:`snnsim.cli`)."""
from snnsim.cli import main
from snnsim.signals import finish

finish(main(prog="python3 -m snnsim"))
