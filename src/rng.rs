//! PyTorch's CPU random generator, reproduced bit for bit:
//! `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` (f32).
//!
//! Stable Diffusion pipelines draw their initial latents (and, for ancestral / DDPM
//! samplers, the per-step noise) from one seeded CPU generator; reproducing it lets a
//! seed give the same image as diffusers.
//!
//! # Layout of torch's generator (`at::CPUGeneratorImpl`)
//!
//! * **Engine**: a 32-bit Mersenne Twister (MT19937, the standard algorithm).
//!   `manual_seed(seed)` takes a `u64` but only its low 32 bits seed the state
//!   (`state[0] = seed & 0xffff_ffff`, then the usual `1812433253` recurrence), so
//!   `seed` and `seed + 2^32` give the same numbers. Seeding also clears the cached
//!   normal sample (below).
//! * **Uniform f32** (`uniform_real_distribution<float>`): one 32-bit draw, low 24 bits
//!   times `2^-24`, in `[0, 1)`.
//! * **Uniform f64** (`uniform_real_distribution<double>`): one `random64` = two 32-bit
//!   draws, the *first* as the high word; low 53 bits times `2^-53`.
//! * **Cached normal**: the scalar Box-Muller below makes two values and keeps the second
//!   (an f64) in the generator for the next scalar draw. It survives between `randn` calls
//!   (and is untouched by the vectorised path); only re-seeding clears it.
//!
//! # `randn(n)` (`normal_kernel` for a contiguous f32 tensor of `n` elements)
//!
//! * **`n >= 16`: vectorised path** (`normal_fill`). First `n` uniform f32 are drawn into
//!   the output. Then every complete block of 16 is transformed in place: for `j < 8`,
//!   `u1 = 1 - d[j]`, `u2 = d[j + 8]`, `r = sqrt(-2 ln u1)`, `θ = 2π u2`,
//!   `d[j] = r cos θ`, `d[j + 8] = r sin θ`. If `n % 16 != 0`, 16 *fresh* uniforms are
//!   drawn into the last 16 slots `d[n-16..n]` (overwriting part of the last full block)
//!   and that window is transformed the same way. So `n + 16` engine draws when
//!   `n % 16 != 0`, else `n`.
//!   On x86-64 torch runs this through AVX2 (`normal_fill_16_AVX2`) with the
//!   single-precision Cephes polynomials of `avx_mathfun.h` (`log256_ps`,
//!   `sincos256_ps`), not libm, with `θ = f32(2π) * u2` in f32. We evaluate the same
//!   polynomials with the same f32 operations in the same order. (CPUs with AVX-512 use
//!   this AVX2 kernel too: torch registers no AVX-512 `normal` kernel.) One more detail
//!   matters for the last bit: the AVX2 kernels are compiled by GCC with `-mfma`, and
//!   GCC (default `-ffp-contract=fast`) fuses an intrinsic multiply whose only use is an
//!   add into a fused multiply-add. We fuse the same pairs (every `a * b + c` in the
//!   polynomials and the argument reduction) with [`f32::mul_add`], correctly rounded
//!   on every target (in software on wasm32). This is inferred from the data, not from a
//!   build flag: without the fusion about 1 % of the golden values differ by 1–2 ulp;
//!   with it all of them match bit for bit. (torch builds without AVX2, e.g. on ARM, use
//!   libm and an f64 `θ` instead and can differ from x86-64 torch, and from us, in the
//!   last bit.)
//! * **`n < 16`: scalar path** (`normal_distribution<double>`), one element at a time:
//!   if a cached value exists it is returned (and cleared); otherwise `u1`, `u2` are two
//!   uniform f64, `r = sqrt(-2 ln(1 - u2))`, `θ = 2π u1`, `r sin θ` is cached and
//!   `r cos θ` returned. Each value is rounded to f32.
//!
//! Consequences for consecutive draws (what the tests check): two `randn` calls equal one
//! call split in two when both parts are at least 16 long and the first is a multiple
//! of 16, or when the total is below 16 (the cache carries the odd value over).
//! Otherwise they differ, exactly as in torch.
//!
//! Memory: `randn(n)` returns a `Vec` of `n` floats; like any `Vec`, a size beyond
//! addressable memory fails the allocation. Nothing else can panic.

/// The MT19937 state (624 words) and the read position, as `at::mt19937`.
#[derive(Clone, Debug)]
struct Mt19937 {
    state: [u32; N],
    /// Index of the next word to temper; `N` means "regenerate first".
    next: usize,
}

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER: u32 = 0x8000_0000;
const LOWER: u32 = 0x7fff_ffff;

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        // Truncation to 32 bits is what torch does (`seed & 0xffffffff`).
        state[0] = (seed & 0xffff_ffff) as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        Mt19937 { state, next: N }
    }

    /// Regenerate all 624 words (the standard MT19937 twist).
    fn twist(&mut self) {
        for k in 0..N {
            let y = (self.state[k] & UPPER) | (self.state[(k + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[k] = self.state[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// PyTorch's CPU generator (`torch.Generator().manual_seed(seed)`): MT19937 plus the
/// cached second Box-Muller value. See the module docs for the exact layout.
#[derive(Clone, Debug)]
pub struct TorchRng {
    engine: Mt19937,
    /// `next_double_normal_sample_`: the `r sin θ` half of the last scalar Box-Muller pair.
    cached_normal: Option<f64>,
}

impl TorchRng {
    /// `torch.Generator().manual_seed(seed)`. Any `u64` is accepted; as in torch only the
    /// low 32 bits reach the Mersenne Twister.
    pub fn new(seed: u64) -> Self {
        TorchRng { engine: Mt19937::new(seed), cached_normal: None }
    }

    /// `torch.randn(n, generator=self)` (any shape with `n` elements, contiguous), as
    /// f32, advancing the generator exactly as torch does. `n == 0` draws nothing.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n >= 16 {
            self.normal_fill(n)
        } else {
            (0..n).map(|_| self.scalar_normal() as f32).collect()
        }
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits in `[0, 1)`.
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits of `random64` (first
    /// draw is the high word) in `[0, 1)`.
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.engine.next_u32());
        let lo = u64::from(self.engine.next_u32());
        let bits = ((hi << 32) | lo) & ((1u64 << 53) - 1);
        bits as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `normal_distribution<double>(0, 1)` with the generator's cached second value.
    fn scalar_normal(&mut self) -> f64 {
        if let Some(v) = self.cached_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        // 1 - u2 is exact for a 53-bit u2, so ln_1p(-u2) == ln(1 - u2) as in torch.
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// The vectorised path for `n >= 16` (see the module docs).
    fn normal_fill(&mut self, n: usize) -> Vec<f32> {
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail_start = n - 16;
            for slot in &mut data[tail_start..] {
                *slot = self.uniform_f32();
            }
            box_muller_16(&mut data[tail_start..]);
        }
        data
    }
}

/// `normal_fill_16_AVX2` on one window of 16 uniforms (in place); any other length is
/// left untouched (never happens: callers pass exactly 16).
fn box_muller_16(d: &mut [f32]) {
    let Some(d) = d.get_mut(..16) else { return };
    // `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2π in f64, rounded to f32.
    const TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0 * cephes_logf(u1)).sqrt();
        let (sin, cos) = cephes_sincosf(TWO_PI * u2);
        // `fmadd(n, std = 1, mean = 0)` is exact here: `n * 1 + 0`.
        d[j] = radius * cos + 0.0;
        d[j + 8] = radius * sin + 0.0;
    }
}

/// A constant of `avx_mathfun.h`: a C `double` literal stored as `float`.
const fn c(v: f64) -> f32 {
    v as f32
}

/// `log256_ps` for one lane: the Cephes `logf` polynomial in f32, operation for
/// operation, with GCC's multiply-add fusion. NaN for `x <= 0` (callers pass `(0, 1]`).
fn cephes_logf(x: f32) -> f32 {
    const SQRTHF: f32 = c(std::f64::consts::FRAC_1_SQRT_2); // 0.707106781186547524
    const P: [f32; 9] = [
        c(7.0376836292E-2),
        c(-1.1514610310E-1),
        c(1.1676998740E-1),
        c(-1.2420140846E-1),
        c(1.4249322787E-1),
        c(-1.6668057665E-1),
        c(2.0000714765E-1),
        c(-2.4999993993E-1),
        c(3.3333331174E-1),
    ];
    const Q1: f32 = c(-2.12194440e-4);
    const Q2: f32 = c(0.693359375);
    if x.is_nan() || x <= 0.0 {
        return f32::NAN;
    }
    // Cut off denormals, split into exponent and mantissa in [0.5, 1).
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    // if m < sqrt(1/2) { e -= 1; m = m + m - 1 } else { m = m - 1 }, as the SIMD code
    // computes it: (m - 1) + (m or 0).
    let small = m < SQRTHF;
    let tmp = if small { m } else { 0.0 };
    m -= 1.0;
    e -= if small { 1.0 } else { 0.0 };
    m += tmp;

    // Horner in f32; every multiply that feeds only an add is fused (see module docs).
    let z = m * m;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    y = y.mul_add(z, e * Q1);
    y = (-z).mul_add(0.5, y);
    m += y;
    e.mul_add(Q2, m)
}

/// `sincos256_ps` for one lane: Cephes `sinf` / `cosf` in f32, operation for operation
/// with GCC's multiply-add fusion (argument reduction by π/4 in three parts, both
/// polynomials, selected per octant).
/// Returns `(sin x, cos x)`; accurate for `|x| < 8192` (callers pass `[0, 2π)`).
fn cephes_sincosf(x: f32) -> (f32, f32) {
    const FOPI: f32 = c(1.27323954473516); // 4 / π
    const DP1: f32 = c(-0.78515625);
    const DP2: f32 = c(-2.418_756_484_985_351_6e-4);
    const DP3: f32 = c(-3.774_894_977_445_941e-8);
    const SINCOF: [f32; 3] = [c(-1.9515295891E-4), c(8.3321608736E-3), c(-1.6666654611E-1)];
    const COSCOF: [f32; 3] = [c(2.443315711809948E-005), c(-1.388731625493765E-003), c(4.166664568298827E-002)];
    const SIGN: u32 = 0x8000_0000;

    let mut sign_sin = x.to_bits() & SIGN;
    let mut x = x.abs();

    // Octant j = (trunc(x * 4/π) + 1) & !1. `cvttps` gives i32::MIN out of range;
    // Rust's `as` saturates instead: only matters for |x| >= 2^31, far outside our use.
    let j = ((x * FOPI) as i32).wrapping_add(1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let use_sin_poly = j & 2 == 0; // `poly_mask`
    // x = ((x - y DP1) - y DP2) - y DP3 ("extended precision modular arithmetic").
    x = y.mul_add(DP1, x);
    x = y.mul_add(DP2, x);
    x = y.mul_add(DP3, x);
    let sign_cos = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
    sign_sin ^= swap_sign_sin;

    let z = x * x;
    // cos polynomial on [-π/4, π/4]: 1 - z/2 + z² (c0 z² + c1 z + c2)
    let mut yc = COSCOF[0].mul_add(z, COSCOF[1]);
    yc = yc.mul_add(z, COSCOF[2]);
    yc *= z;
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;
    // sin polynomial on [-π/4, π/4]: x + x z (s0 z² + s1 z + s2)
    let mut ys = SINCOF[0].mul_add(z, SINCOF[1]);
    ys = ys.mul_add(z, SINCOF[2]);
    ys *= z;
    ys = ys.mul_add(x, x);

    // Select as the SIMD code does (masking with and / andnot, then adding).
    let ysin2 = if use_sin_poly { ys } else { 0.0 };
    let ysin1 = if use_sin_poly { 0.0 } else { yc };
    let ys_rest = ys - ysin2;
    let yc_rest = yc - ysin1;
    let sin = ysin1 + ysin2;
    let cos = yc_rest + ys_rest;
    (f32::from_bits(sin.to_bits() ^ sign_sin), f32::from_bits(cos.to_bits() ^ sign_cos))
}

/// Deterministic uniform numbers (SplitMix64): synthetic weights, benchmark inputs and
/// the self-test's inputs (not torch's generator: that is [`TorchRng`]).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)).collect()
    }
}
