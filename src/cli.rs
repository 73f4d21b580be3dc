//! The native command line (`sd-webgpu`). Not built for wasm32.
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use crate::gpu::{DType, Gpu, GpuOptions};
use crate::ops::{self, Act, Conv2d};
use crate::selftest::Rng;

#[derive(Parser)]
#[command(name = "sd-webgpu", version, about = "Stable Diffusion on WebGPU / wgpu")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dt {
    F32,
    F16,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the adapter, its features and limits.
    Info,
    /// Throughput of the matmul (4096×320·320ᵀ) and conv2d (3×3, 64×64×320→320) kernels.
    BenchKernels {
        /// Timed runs per kernel (median reported) after one warm-up run.
        #[arg(long, default_value_t = 3)]
        iters: usize,
        /// Storage dtype of activations and weights.
        #[arg(long, value_enum, default_value_t = Dt::F32)]
        dtype: Dt,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn main(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(std::iter::once("sd-webgpu".to_string()).chain(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match pollster::block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn run(cli: Cli) -> crate::Result<()> {
    let gpu = Gpu::new(GpuOptions::default()).await?;
    match cli.cmd {
        Cmd::Info => {
            println!("{}", serde_json::to_string_pretty(gpu.info()).unwrap_or_default());
        }
        Cmd::BenchKernels { iters, dtype, json } => {
            let dtype = match dtype {
                Dt::F32 => DType::F32,
                Dt::F16 => DType::F16,
            };
            let mut rng = Rng::new(1);
            let mut up = |shape: &[usize], s: f32| gpu.upload(shape, dtype, &rng.vec(shape.iter().product(), -s, s));
            let x = up(&[4096, 320], 1.0)?;
            let w = up(&[320, 320], 0.05)?;
            let b = up(&[320], 0.1)?;
            let mm = time(&gpu, iters, || ops::linear(&gpu, &x, &w, Some(&b), Act::None, None).map(drop)).await?;
            let mm_flop = 2.0 * 4096.0 * 320.0 * 320.0;
            let xc = up(&[1, 320, 64, 64], 1.0)?;
            let wc = up(&[320, 320, 3, 3], 0.02)?;
            let cv = time(&gpu, iters, || ops::conv2d(&gpu, &xc, &wc, Some(&b), Conv2d::new(1, 1), Act::None, None).map(drop)).await?;
            let cv_flop = 2.0 * 64.0 * 64.0 * 320.0 * 320.0 * 9.0;
            let info = gpu.info();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "adapter": info.name, "backend": info.backend, "dtype": dtype.name(), "iters": iters,
                        "matmul_4096x320x320_ms": mm * 1e3, "matmul_gflops": mm_flop / mm / 1e9,
                        "conv2d_3x3_64x64x320_ms": cv * 1e3, "conv2d_gflops": cv_flop / cv / 1e9,
                    })
                );
            } else {
                println!("adapter: {} ({}), storage {}, median of {iters} after 1 warm-up (wall clock incl. submit + sync)", info.name, info.backend, dtype.name());
                println!("matmul 4096×320·320ᵀ + bias:        {:9.2} ms  {:8.3} GFLOP/s", mm * 1e3, mm_flop / mm / 1e9);
                println!("conv2d 3×3 64×64×320→320 + bias:    {:9.2} ms  {:8.3} GFLOP/s", cv * 1e3, cv_flop / cv / 1e9);
            }
        }
    }
    Ok(())
}

/// Median seconds of `iters` runs of `f` (each submitted and waited for), after one warm-up.
async fn time(gpu: &Gpu, iters: usize, f: impl Fn() -> crate::Result<()>) -> crate::Result<f64> {
    f()?;
    gpu.sync().await?;
    let mut t = Vec::new();
    for _ in 0..iters.max(1) {
        let s = Instant::now();
        f()?;
        gpu.sync().await?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}
