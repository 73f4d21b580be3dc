//! `TorchRng` against torch: every `randn_*` golden tensor (made with
//! `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` on CPU), and how
//! consecutive draws share one generator (read from torch's `normal_kernel`).
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::rng::TorchRng;

/// `randn_seed{SEED}_{D0}x{D1}x…` → (seed, shape).
fn parse_name(name: &str) -> (u64, Vec<usize>) {
    let rest = name.strip_prefix("randn_seed").unwrap_or_else(|| panic!("{name}: expected randn_seed<N>_<shape>"));
    let (seed, shape) = rest.split_once('_').unwrap_or_else(|| panic!("{name}: no shape after the seed"));
    let seed = seed.parse().unwrap_or_else(|e| panic!("{name}: seed {seed:?}: {e}"));
    let shape = shape.split('x').map(|d| d.parse().unwrap_or_else(|e| panic!("{name}: dim {d:?}: {e}"))).collect();
    (seed, shape)
}

fn draw(seed: u64, sizes: &[usize]) -> Vec<Vec<f32>> {
    let mut rng = TorchRng::new(seed);
    sizes.iter().map(|&n| rng.randn(n)).collect()
}

fn concat(parts: &[Vec<f32>]) -> Vec<f32> {
    parts.concat()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

cpu_test!(randn_matches_every_golden, || {
    let bytes = common::fixtures::bytes("golden.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden.safetensors");
    let mut names: Vec<String> = st.names().into_iter().filter(|n| n.starts_with("randn_")).map(|n| n.to_string()).collect();
    names.sort();
    assert!(!names.is_empty(), "no randn_ tensor in golden.safetensors");
    let mut failures = Vec::new();
    for name in &names {
        let (seed, shape) = parse_name(name);
        let (want, golden_shape) = common::fixtures::golden(&bytes, name);
        assert_eq!(shape, golden_shape, "{name}: shape in the name vs the tensor");
        let n: usize = shape.iter().product();
        let got = TorchRng::new(seed).randn(n);
        assert_eq!(got.len(), want.len(), "{name}: length");
        let mut worst = (0.0f32, 0usize);
        let mut exact = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = (g - w).abs();
            if g.to_bits() == w.to_bits() {
                exact += 1;
            }
            if err > worst.0 || err.is_nan() {
                worst = (err, i);
            }
        }
        let (err, i) = worst;
        let line = format!(
            "{name}: seed {seed} shape {shape:?}: {exact}/{n} bit-exact, max |err| {err:e} at index {i} (got {}, torch {})",
            got[i], want[i]
        );
        log!("{line}");
        if err.is_nan() || err > 1e-6 {
            failures.push(line);
        }
    }
    assert!(failures.is_empty(), "randn differs from torch:\n{}", failures.join("\n"));
});

cpu_test!(seed_uses_low_32_bits, || {
    // at::mt19937 seeds with `seed & 0xffffffff`.
    let a = TorchRng::new(5).randn(20);
    let b = TorchRng::new((1u64 << 32) + 5).randn(20);
    let c = TorchRng::new(u64::MAX).randn(20);
    let d = TorchRng::new(0xffff_ffff).randn(20);
    assert!(same_bits(&a, &b));
    assert!(same_bits(&c, &d));
    assert!(!same_bits(&a, &c));
});

cpu_test!(known_torch_values, || {
    // torch.manual_seed(0); torch.randn(2, 3) (the scalar path), as printed in countless
    // tutorials: [[1.5410, -0.2934, -2.1788], [0.5684, -1.0845, -1.3986]].
    let got = TorchRng::new(0).randn(6);
    let want = [1.5410f32, -0.2934, -2.1788, 0.5684, -1.0845, -1.3986];
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-4, "index {i}: got {g}, torch {w}");
    }
    assert!(TorchRng::new(0).randn(0).is_empty());
});

// Vectorised path (n >= 16): uniforms are consumed in order and every block of 16 uses
// only its own uniforms, so a draw of 16k elements followed by any draw of >= 16 equals
// one draw of the total.
cpu_test!(vectorised_draws_split_at_multiples_of_16, || {
    for (seed, a, b) in [(42u64, 16usize, 16usize), (3, 32, 21), (7, 4096, 16384 - 4096), (11, 48, 99)] {
        let whole = TorchRng::new(seed).randn(a + b);
        let split = concat(&draw(seed, &[a, b]));
        assert!(same_bits(&whole, &split), "seed {seed}: randn({}) != randn({a}) ++ randn({b})", a + b);
    }
});

// Scalar path (n < 16): Box-Muller pairs with the second value cached in the generator,
// so consecutive small draws continue one sequence while the total stays below 16.
cpu_test!(scalar_draws_continue_through_the_cache, || {
    for (seed, sizes) in [(1u64, vec![7usize, 7]), (2, vec![5, 3, 1]), (9, vec![1, 1, 1, 12]), (4, vec![3, 0, 4])] {
        let total: usize = sizes.iter().sum();
        let whole = TorchRng::new(seed).randn(total);
        let split = concat(&draw(seed, &sizes));
        assert!(same_bits(&whole, &split), "seed {seed}: randn({total}) != split {sizes:?}");
    }
});

// What does *not* split in torch: a draw that is not a multiple of 16 recomputes its last
// 16 values from 16 fresh uniforms (n + 16 draws), and a small draw uses f64 uniforms.
cpu_test!(other_splits_differ_like_torch, || {
    let whole = TorchRng::new(5).randn(20);
    assert!(!same_bits(&whole, &concat(&draw(5, &[10, 10]))));
    assert!(!same_bits(&whole, &concat(&draw(5, &[16, 4]))));
    assert!(!same_bits(&TorchRng::new(5).randn(40), &concat(&draw(5, &[20, 20]))));

    // randn(20) consumes 20 + 16 = 36 engine words and leaves no cached value; so does
    // randn(32) (32 words) followed by randn(2) (one f64 pair: 4 words, nothing cached).
    let a = draw(8, &[20, 16]);
    let b = draw(8, &[32, 2, 16]);
    assert!(same_bits(&a[1], &b[2]), "randn(20) must consume 36 words");
    // Its first 4 values come from the first full block (as in randn(16)); the last 16
    // from the recomputed window.
    let full = TorchRng::new(8).randn(16);
    assert!(same_bits(&a[0][..4], &full[..4]));
});

// The cached scalar value survives a vectorised draw in between (only seeding clears it).
cpu_test!(cache_survives_vectorised_draws, || {
    let a = draw(123, &[3, 16, 1]);
    let b = draw(123, &[4, 16]);
    assert!(same_bits(&a[2], &b[0][3..4]), "cached 4th value");
    assert!(same_bits(&a[1], &b[1]), "randn(3) and randn(4) consume the same 8 words");
    // A new generator with the same seed starts without the cache.
    assert!(same_bits(&TorchRng::new(123).randn(3), &b[0][..3]));
});
