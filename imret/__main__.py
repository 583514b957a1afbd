import sys

from .cli import main

# Guarded: extraction worker processes (spawned) import the main module again.
if __name__ == "__main__":
    sys.exit(main())
