# Test helpers live in perl_testlib.py (a unique module name: pytest runs with
# --import-mode=importlib, and the repo root has its own conftest).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

# Tiny models: one thread avoids OpenMP contention on a shared 2-core machine (7x faster here).
torch.set_num_threads(1)
