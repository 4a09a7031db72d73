//! Benchmark harness (see docs/benchmarks.md).
fn main() {
    eprintln!("riveredge-bench: not built yet");
    std::process::exit(2);
}
