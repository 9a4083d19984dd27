"""The training engine: builds a model from a config and the files handed to it, trains, evaluates and
checkpoints. It reads no results store: the experiment layer resolves what a run needs."""
