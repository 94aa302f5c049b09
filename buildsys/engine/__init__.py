"""The build's orchestration: deciding, ordering and running steps, and answering a no-op.

    status     exit statuses of a build and the status word of each step (no imports: the no-op reads it)
    answer     outcomes, jobs and step answers: what moves between the parts
    runner     the Runner and Reporter protocols that executors and progress displays implement
    scheduler  the order of steps, parallelism, the GPU slot, keep-going
    keys       the key document, its environment (and the no-op's), the artifact digest, the reasons two keys differ
    rebuilder  decide, restore, commit, record: the only writer of traces, the store and the shared cache
    session    one command's workspace (lock, state, store, shared cache, executor) and one call per command
    noop       the recorded answer of a no-op build or status, stamped by what the build read

Nothing is imported here, so that a module of this package costs only itself.
"""
