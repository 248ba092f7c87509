//! `cargo bench -p caisson-bench`: see the crate's documentation.

/// The allocator the `caisson` binary uses, so that the in-process server
/// measured here allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    caisson_bench::main()
}
