//! Native command line: `sd-webgpu bench-kernels` (more subcommands come with the pipeline).
#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(sd_webgpu::cli::main(std::env::args().skip(1).collect()));
}

#[cfg(target_arch = "wasm32")]
fn main() {}
