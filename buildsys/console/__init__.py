"""The command line's parts: the parser (`arguments`), printing results (`show`), live progress."""
