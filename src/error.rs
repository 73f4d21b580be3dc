//! One error type for the whole crate. Every variant names what it is about
//! (op, tensor, file, shape, limit) so the message reaches a person intact.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("WebGPU is not available: {0}. Use a browser with WebGPU enabled (Chrome/Edge 113+, or Firefox/Safari with WebGPU turned on) and up-to-date GPU drivers; natively, install a Vulkan, Metal or DX12 driver (on Linux without a GPU: Mesa's lavapipe, package mesa-vulkan-drivers).")]
    NoAdapter(String),
    #[error("could not open the GPU device: {0}")]
    Device(String),
    #[error("{op}: bad shapes: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op}: {detail}")]
    Unsupported { op: &'static str, detail: String },
    #[error("{what} needs {needed} bytes but the adapter allows at most {limit} ({limit_name})")]
    Limit { what: String, needed: u64, limit: u64, limit_name: &'static str },
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("reading back tensor from the GPU failed: {0}")]
    Readback(String),
    #[error("data for tensor of shape {shape:?} has {got} elements, expected {expected}")]
    DataLength { shape: Vec<usize>, expected: usize, got: usize },
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
    #[error("{0}. Reload the model to continue (the weights come from the browser cache).")]
    DeviceLost(String),
    #[error("generation cancelled")]
    Cancelled,
    #[error("{0}")]
    Invalid(String),
    /// NaN or infinity in the latents or the image (an f16 overflow, or broken weights).
    #[error("{0}")]
    NonFinite(String),
    #[error("shader {0}: {1}")]
    Shader(String, String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a shape error.
pub fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, detail: detail.into() })
}
