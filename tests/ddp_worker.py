"""One process of a 2-process DistributedDataParallel run on the CPU (gloo), started by
torchrun from tests/test_train.py: trains the tiny configuration given as JSON and saves this
rank's parameters and loss history, so that the test can compare the two ranks."""
import json
import sys

import torch
import torch.distributed as dist

from fglib.core.config import book_profile
from fglib.engine.train import train

if __name__ == "__main__":
    out, settings = sys.argv[1], json.loads(sys.argv[2])
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        result = train(book_profile(**settings), progress=False)
        torch.save({"params": {n: p.detach() for n, p in result.model.named_parameters()},
                    "history": result.history}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
