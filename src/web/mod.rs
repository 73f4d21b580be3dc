//! The browser layer: the only module that uses wasm-bindgen / web-sys.
//! Exposes adapter information and the kernel self-test to the page.
use std::cell::RefCell;

use wasm_bindgen::prelude::*;

use crate::gpu::{DType, Gpu, GpuOptions};
use crate::{selftest, Error};

thread_local! {
    static GPU: RefCell<Option<Gpu>> = const { RefCell::new(None) };
}

fn js_err(e: Error) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

async fn gpu() -> Result<Gpu, JsValue> {
    if let Some(g) = GPU.with(|g| g.borrow().clone()) {
        return Ok(g);
    }
    let g = Gpu::new(GpuOptions::default()).await.map_err(js_err)?;
    GPU.with(|c| *c.borrow_mut() = Some(g.clone()));
    Ok(g)
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Adapter name, backend, f16 / subgroup support and limits, as JSON.
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<String, JsValue> {
    let g = gpu().await?;
    serde_json::to_string(g.info()).map_err(|e| JsValue::from_str(&e.to_string()))
}

/// Names of the kernel checks the self-test runs.
#[wasm_bindgen(js_name = kernelNames)]
pub fn kernel_names() -> Vec<String> {
    selftest::KERNELS.iter().map(|s| s.to_string()).collect()
}

/// Run one kernel's checks with f32 and f16 storage; JSON array of results.
#[wasm_bindgen(js_name = selfTest)]
pub async fn self_test(kernel: String) -> Result<String, JsValue> {
    let g = gpu().await?;
    let mut all = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        all.extend(selftest::run(&g, &kernel, dtype).await.map_err(js_err)?);
    }
    serde_json::to_string(&all).map_err(|e| JsValue::from_str(&e.to_string()))
}
