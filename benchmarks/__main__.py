"""`python -m benchmarks`: the build-overhead benchmark (see benchmarks/cli.py)."""
import sys

from benchmarks.cli import main

sys.exit(main())
