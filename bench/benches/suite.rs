//! `cargo bench -p caisson-bench`: see the crate's documentation.

fn main() -> anyhow::Result<()> {
    caisson_bench::main()
}
