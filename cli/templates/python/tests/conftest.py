import sys
from pathlib import Path

# The task's own modules (`import app`).
sys.path.insert(0, str(Path(__file__).parent.parent))

# The Caisson SDK this project was created with, unless one is installed
# (`pip install {{sdk}}` puts it where editors and type checkers see it too).
try:
    import caisson  # noqa: F401
except ImportError:
    sys.path.insert(0, {{sdk_quoted}})
