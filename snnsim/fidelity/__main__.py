"""`python3 -m snnsim.fidelity`: the command line of the gradient-fidelity study (:mod:`.cli`)."""
import sys

from snnsim.fidelity.cli import main

sys.exit(main())
