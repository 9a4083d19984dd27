"""Foundations: configuration, paths, statistics, the runtime (progress bars, threads) and the hardware
(CPU kind, precision). They import nothing else from fglib."""
