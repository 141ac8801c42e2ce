"""One module per area; each registers its workloads with
bench.harness.workload."""
