"""Developer tooling, out of the product packages: the benchmark harnesses behind
`helium bench ...`, the GPU check and one-off probes."""
