# Test helpers live in galore_testlib.py (a unique module name: pytest runs with
# --import-mode=importlib, and the repo root has its own conftest).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
