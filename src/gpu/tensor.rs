//! GPU tensors: a storage buffer from the pool + shape + dtype.
use super::pool::BufRef;

/// Storage dtype of a tensor. f16 is stored as little-endian halves (two per
/// u32 word), which is the same memory layout as WGSL's `array<f16>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    /// Bytes of a buffer holding `numel` elements (whole u32 words).
    pub fn buffer_bytes(self, numel: usize) -> u64 {
        let n = numel as u64;
        match self {
            DType::F32 | DType::U32 => 4 * n,
            DType::F16 => 4 * n.div_ceil(2),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
}

/// Most dimensions of a tensor (shapes are kept inline, without a heap allocation).
pub const MAX_RANK: usize = 6;

/// A shape kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

impl Shape {
    pub(crate) fn new(shape: &[usize]) -> crate::Result<Shape> {
        if shape.len() > MAX_RANK {
            return crate::error::shape_err("tensor", format!("shape {shape:?} has more than {MAX_RANK} dimensions"));
        }
        let mut dims = [0; MAX_RANK];
        dims[..shape.len()].copy_from_slice(shape);
        Ok(Shape { dims, rank: shape.len() as u8 })
    }
    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }
}

/// A tensor on the GPU. Cloning shares the buffer; dropping the last clone
/// returns the buffer to the pool (safe: work recorded earlier runs first).
#[derive(Clone)]
pub struct Tensor {
    pub(crate) buf: BufRef,
    shape: Shape,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape(), self.dtype.name())
    }
}

impl Tensor {
    pub(crate) fn new(buf: BufRef, shape: Shape, dtype: DType) -> Self {
        Tensor { buf, shape, dtype }
    }
    pub fn shape(&self) -> &[usize] {
        self.shape.as_slice()
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }
    pub fn rank(&self) -> usize {
        self.shape.rank as usize
    }
    /// Size of dimension `d`; negative counts from the end.
    pub fn dim(&self, d: isize) -> usize {
        let r = self.rank() as isize;
        let i = if d < 0 { r + d } else { d };
        if i < 0 || i >= r {
            0
        } else {
            self.shape()[i as usize]
        }
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf.get().buffer
    }
    pub fn bytes(&self) -> u64 {
        self.dtype.buffer_bytes(self.numel())
    }
    /// Same data, another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> crate::Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return crate::error::shape_err(
                "reshape",
                format!("cannot view {:?} as {:?}", self.shape(), shape),
            );
        }
        Ok(Tensor { buf: self.buf.clone(), shape: Shape::new(shape)?, dtype: self.dtype })
    }
}
