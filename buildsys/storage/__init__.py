"""Storage: the content-addressed store, the state database, the shared cache, and what keeps them safe.

Safe paths (no write through a link), untrusted blobs (checked before they are placed), and the
garbage collection of the store and the shared cache. Below the recipes: nothing here knows a step.
"""
