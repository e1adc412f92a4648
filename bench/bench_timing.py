"""bench/bench_timing.py: the one timing loop the Python peers share (bench/torch_inception_cpu.py
under Debian's python with torch, bench/peers_cpu.py under the peers' venv with OpenVINO and ONNX
Runtime): `warmup` untimed calls, then the median wall time of `iters` calls. Standard library
only, so both interpreters import it from this folder."""
import statistics
import time


def median_seconds(fn, x, iters, warmup):
    for _ in range(warmup):
        fn(x)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
