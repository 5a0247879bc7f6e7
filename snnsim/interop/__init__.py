"""Exchange with other simulators and chips: :mod:`snnsim.interop.nir` (the Neuromorphic
Intermediate Representation, docs/nir.md)."""
