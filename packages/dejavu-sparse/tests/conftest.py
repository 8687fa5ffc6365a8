import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
# Tiny models: one intra-op thread is much faster than two on a shared, loaded machine.
torch.set_num_threads(1)
