//! Work in progress: benchmarks and the scenario harness.
