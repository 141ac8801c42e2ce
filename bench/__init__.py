"""Side-by-side benchmarks: each workload runs on fastmp and on the
standard package, each in a fresh interpreter, in one run."""
