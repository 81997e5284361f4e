"""Arithmetic on parameter-efficient modules (Zhang et al. 2023): pure ops on adapter state dicts
(:mod:`almost.pem.ops`), adapter directories in and out (:mod:`almost.pem.io`), and the command
``python -m almost.pem`` (composition and lambda sweeps)."""
