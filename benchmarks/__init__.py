"""Benchmarks of buildsys: each prints its figures; none is a test.

`python -m benchmarks` (what `make bench-build` runs) is the build-overhead
benchmark, buildsys beside GNU make and DVC on the same synthetic pipeline. Its
modules:

    workspace   the synthetic recipe workspaces (model and stand-in steps copied in)
    standins/   the stand-in steps of the make and DVC pipelines, real scripts
    tools       the tools compared: buildsys, make, DVC (the `bench` extra)
    harness     the environment every command measured runs with, the code snapshot
    timing      one timed command, a cell of samples and its median
    run         the series of every operation at one recipe count
    report      the printed tables and results.json
    samples     --samples: the sample recipes of recipes/
    profiling   --profile: importtime and cProfile of buildsys
    cli         the options

probes/record_state.py is what bench_cache_gc.py --noop times under each version of the code.

The scripts beside it run on their own: bench_cache_gc.py, bench_int8.py,
bench_step_start.py, gpu_check.py, plain_resnet18.py, real_models.py,
resnet18_batch1.py.
"""
