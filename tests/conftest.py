"""Shared test settings: tests run single-threaded unless FGLIB_THREADS says otherwise."""
import os

import torch

torch.set_num_threads(int(os.environ.get("FGLIB_THREADS", "1")))
