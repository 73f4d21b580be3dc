//! Helpers shared by the test files; every test runs under both runners:
//! native `cargo test` (lavapipe in CI) and `wasm-pack test --headless --chrome`.
#![allow(dead_code)]
pub mod fixtures;
pub mod model;
pub mod parity;

use sd_webgpu::gpu::{Gpu, GpuOptions};

/// The runner's name in the `PARITY|…` / `COMPONENT|…` lines.
pub fn runner() -> &'static str {
    if cfg!(target_arch = "wasm32") {
        "browser"
    } else {
        "native"
    }
}

#[macro_export]
macro_rules! log {
    ($($t:tt)*) => {{
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_test::console_log!($($t)*);
        #[cfg(not(target_arch = "wasm32"))]
        println!($($t)*);
    }};
}

/// Fixture files of a test file's bundles, by path under `tests/fixtures/`: defines
/// `fx(rel) -> Vec<u8>` and `fx_text(rel) -> String` in the calling test file, reading from
/// disk natively and embedding the listed files in that test module only for the browser
/// (anything else falls back to `common::fixtures::file`).
#[macro_export]
macro_rules! bundle_files {
    ($($f:literal),* $(,)?) => {
        #[cfg(not(target_arch = "wasm32"))]
        #[allow(dead_code)]
        fn fx(rel: &str) -> Vec<u8> {
            crate::common::fixtures::file(rel)
        }
        #[cfg(target_arch = "wasm32")]
        #[allow(dead_code)]
        fn fx(rel: &str) -> Vec<u8> {
            match rel {
                $($f => include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $f)).to_vec(),)*
                other => crate::common::fixtures::file(other),
            }
        }
        #[allow(dead_code)]
        fn fx_text(rel: &str) -> String {
            String::from_utf8(fx(rel)).expect("utf-8 fixture")
        }
    };
}

/// Declare an async test for both runners: `gpu_test!(name, async_fn_path);`
#[macro_export]
macro_rules! gpu_test {
    ($name:ident, $body:expr) => {
        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        fn $name() {
            pollster::block_on($body);
        }
        #[cfg(target_arch = "wasm32")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        async fn $name() {
            $body.await;
        }
    };
}

/// Declare an async test that CI runs natively only (what SwiftShader would take too long
/// for in CI's time, said at each use): `native_test!(name, async_fn_path(args));`. In the
/// browser it is `#[ignore]`d with that reason, so the whole suite still runs there on
/// demand: `wasm-pack test --headless --chrome --release --test FILE -- --include-ignored`.
#[macro_export]
macro_rules! native_test {
    ($name:ident, $body:expr) => {
        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        fn $name() {
            pollster::block_on($body);
        }
        #[cfg(target_arch = "wasm32")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        #[ignore = "SwiftShader: too slow for CI's time (run natively in CI); run with -- --include-ignored"]
        async fn $name() {
            $body.await;
        }
    };
}

/// Declare an async test that CI runs in the browser only: natively it is `#[ignore]`d with
/// `$reason` (another native test covers it), `-- --ignored` runs it.
#[macro_export]
macro_rules! browser_test {
    ($name:ident, $reason:tt, $body:expr) => {
        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        #[ignore = $reason]
        fn $name() {
            pollster::block_on($body);
        }
        #[cfg(target_arch = "wasm32")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        async fn $name() {
            $body.await;
        }
    };
}

/// A test that CI skips in both runners, with its reason (natively `-- --ignored`, in the
/// browser `-- --include-ignored` runs it).
#[macro_export]
macro_rules! ignored_test {
    ($name:ident, $reason:tt, $body:expr) => {
        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        #[ignore = $reason]
        fn $name() {
            pollster::block_on($body);
        }
        #[cfg(target_arch = "wasm32")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        #[ignore = $reason]
        async fn $name() {
            $body.await;
        }
    };
}

/// Declare a CPU-only test for both runners: `cpu_test!(name, || body);`
#[macro_export]
macro_rules! cpu_test {
    ($name:ident, $body:expr) => {
        #[cfg_attr(not(target_arch = "wasm32"), test)]
        #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
        fn $name() {
            ($body)();
        }
    };
}

/// Milliseconds on a monotonic-enough clock in both runners (for the figures the tests print).
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static T0: OnceLock<std::time::Instant> = OnceLock::new();
        T0.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1000.0
    }
}

pub async fn gpu(native_f16: bool) -> Gpu {
    match Gpu::new(GpuOptions { native_f16, ..Default::default() }).await {
        Ok(g) => g,
        Err(e) => panic!("no GPU for the tests: {e}"),
    }
}
