"""The exit statuses of the `buildsys` command, defined once (standard library only: the no-op answer reads them)."""

EXIT_OK = 0
EXIT_PARITY = 1  # a candidate's outputs are outside the recipe's tolerances
EXIT_USAGE = 2  # a recipe or the command line is wrong
EXIT_STEP = 3  # a step could not start, or ran and failed
EXIT_INTERRUPTED = 130
