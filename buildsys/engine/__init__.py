"""The build's orchestration: deciding, ordering and running steps, and answering a no-op."""
