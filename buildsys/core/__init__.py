"""The foundation: errors and exit codes, canonical JSON, the toolchain and GPU facts, numerics.

These modules import nothing else of buildsys's but each other; every layer above may use them.
"""
