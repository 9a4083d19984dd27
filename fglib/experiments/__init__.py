"""Experiments: the results store, code fingerprints, the runner that looks runs up or trains them, the
record and verify commands, the regimes, the pretraining run and stored measurements. This layer
resolves which pretrained weights or frozen proposal network a run needs and hands them down."""
