"""`python3 -m snnsim.fidelity`: the command line of the gradient-fidelity study."""
import sys

from snnsim.fidelity.study import main

sys.exit(main())
