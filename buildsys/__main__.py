"""`python -m buildsys` runs the command line."""
import sys

from buildsys.cli import main

if __name__ == "__main__":
    sys.exit(main())
