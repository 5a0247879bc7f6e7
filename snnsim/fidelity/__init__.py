"""The gradient-fidelity study: the authors' TSSL-BP gradient against the exact
derivative of the event-shift model and against surrogate-gradient BPTT."""
