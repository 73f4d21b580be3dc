//! Native command line: `sd-webgpu bench-kernels` (more subcommands come with the pipeline).
/// Counts heap allocations for `bench --plan` (`heap_allocations_per_unet_step`).
#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOC: sd_webgpu::alloc_count::Counting = sd_webgpu::alloc_count::Counting;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(sd_webgpu::cli::main(std::env::args().skip(1).collect()));
}

#[cfg(target_arch = "wasm32")]
fn main() {}
