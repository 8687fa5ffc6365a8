import sys
from pathlib import Path

# tests/ imports tools.workspace (stdlib-only layout facts) from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
