"""The slow, plain-loop transcription of TSSL-BP: one neuron, one step at a time.

Everything lives in :mod:`reference.loops` (``from reference import loops``);
this package file imports nothing, so that ``python3 -m pdb -m reference.loops``
runs the worked example cleanly. It is the oracle of the vectorised engine
(``tests/test_reference.py``); ``reference/README.md`` says how to step through
it and maps each equation to its engine function, reference function and test.
"""
