"""The gradient-fidelity study: the authors' TSSL-BP gradient against the exact
derivative of the event-shift model and against surrogate-gradient BPTT.

One module per job: the backward variants themselves are the engine's
(:mod:`snnsim.variants`); :mod:`.measure` (cosines, finite differences, descent probe,
ladder), :mod:`.problems` (random networks, the Fashion-MNIST MLP on a batch),
:mod:`.training` (training through ``python3 -m snnsim.train``), :mod:`.report` (tables,
markdown, the report from ``report_template.md``), :mod:`.plotting` (figures),
:mod:`.cli` (``python3 -m snnsim.fidelity``).
"""
