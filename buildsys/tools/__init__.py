"""Tools beside the build: `bench`, `view` (the graph in a browser) and `doctor` (the GPU setup)."""
