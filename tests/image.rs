//! Images in and out: the A1111 `parameters` chunk survives any prompt (tEXt for Latin-1,
//! iTXt UTF-8 otherwise, as PIL writes them; a metadata problem never costs the image), and
//! img2img inputs of any size are fitted as AUTOMATIC1111 does (goldens: its
//! `images.resize_image` with PIL's LANCZOS, from scripts/make_extra_goldens.py).
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use sd_webgpu::image::{decode_image, encode_png, is_latin1, png_parameters, png_parameters_chunk, resize_to, round_to_multiple, ResizeMode, Rgb};

fn test_image(w: usize, h: usize) -> Rgb {
    let data = (0..w * h * 3).map(|i| ((i * 37) % 256) as f32 / 255.0).collect();
    Rgb { width: w, height: h, data }
}

/// The prompt of the issue that lost its image, in A1111's text with its settings line.
const UNICODE_PROMPT: &str = "a cat’s “dream” — 東京 🙂";

cpu_test!(png_parameters_any_prompt_round_trip, || {
    let img = test_image(24, 16);
    for (prompt, chunk) in [(UNICODE_PROMPT, "iTXt"), ("café crème, ½ price — no", "iTXt"), ("café crème, ½ price", "tEXt"), ("a photo of an astronaut", "tEXt")] {
        let text = format!("{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 24x16, Model: tiny");
        let png = encode_png(&img, Some(&text)).unwrap_or_else(|e| panic!("{prompt:?}: {e}"));
        assert!(png.warning.is_none(), "{prompt:?}: {:?}", png.warning);
        assert_eq!(png_parameters(&png.bytes).as_deref(), Some(text.as_str()), "{prompt:?}: the chunk read back");
        assert_eq!(png_parameters_chunk(&png.bytes), Some(chunk), "{prompt:?}");
        assert_eq!(is_latin1(&text), chunk == "tEXt");
        let back = decode_image(&png.bytes, "round trip").unwrap();
        assert_eq!((back.width, back.height), (24, 16));
        assert_eq!(back.data.iter().map(|v| (v * 255.0).round() as u8).collect::<Vec<_>>(), img.to_u8(), "{prompt:?}: pixels");
        log!("{chunk} for {prompt:?}: {} bytes", png.bytes.len());
    }
});

cpu_test!(png_metadata_problem_keeps_the_image, || {
    // A chunk the PNG encoder refuses (an empty keyword): the image is still made.
    let img = test_image(8, 8);
    let png = sd_webgpu::image::encode_png_text(&img, "", Some(UNICODE_PROMPT)).expect("an image even when the metadata fails");
    let w = png.warning.expect("a warning");
    log!("warning: {w}");
    assert!(w.contains("saved without"), "{w}");
    assert_eq!(decode_image(&png.bytes, "x").unwrap().to_u8(), img.to_u8());
    assert!(encode_png(&Rgb { width: 4, height: 4, data: vec![0.0; 3] }, None).is_err(), "wrong pixel count is an error");
});

cpu_test!(resize_modes_match_a1111, || {
    let g = fixtures::file("extra/golden.safetensors");
    let cases: serde_json::Value = serde_json::from_str(&fixtures::file_text("extra/cases.json")).unwrap();
    let mut fails = Vec::new();
    for r in cases["cases"]["resize"]["runs"].as_array().unwrap() {
        let (src, ss) = golden(&g, r["source"].as_str().unwrap());
        let src = Rgb { width: ss[1], height: ss[0], data: src.iter().map(|v| v / 255.0).collect() };
        let (w, h) = (r["width"].as_u64().unwrap() as usize, r["height"].as_u64().unwrap() as usize);
        let mode = ResizeMode::parse(r["mode"].as_str().unwrap()).unwrap();
        let got = resize_to(&src, w, h, mode);
        assert_eq!((got.width, got.height), (w, h));
        let (want, ws) = golden(&g, r["key"].as_str().unwrap());
        assert_eq!(ws, vec![h, w, 3]);
        let diffs: Vec<f64> = got.data.iter().zip(&want).map(|(a, b)| (*a as f64 * 255.0 - *b as f64).abs()).collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let (at, max) = diffs.iter().enumerate().fold((0, 0f64), |m, (i, &d)| if d > m.1 { (i, d) } else { m });
        let key = r["key"].as_str().unwrap();
        log!("{key}: mean |ours − A1111| {mean:.2} /255, max {max:.1} /255 at {at} (pixel {}, {})", (at / 3) % w, at / 3 / w);
        // PIL's uint8 Lanczos (fixed-point, rounded) vs ours in f32: a level or two apart.
        if mean > 0.6 || max > 3.0 {
            fails.push(format!("{key}: mean {mean:.2}/255, max {max:.1}/255 at {at}"));
        }
    }
    assert!(fails.is_empty(), "{fails:?}");
});

cpu_test!(resize_geometry, || {
    // A 40×20 image, left half black, right half white, fitted to 64×64.
    let mut img = Rgb { width: 40, height: 20, data: vec![0.0; 40 * 20 * 3] };
    for y in 0..20 {
        for x in 20..40 {
            for c in 0..3 {
                img.data[(y * 40 + x) * 3 + c] = 1.0;
            }
        }
    }
    let px = |r: &Rgb, x: usize, y: usize| r.data[(y * r.width + x) * 3];
    // crop: scaled to 128×64 to cover, centred: the output shows the middle (both halves).
    let c = resize_to(&img, 64, 64, ResizeMode::Crop);
    assert!(px(&c, 2, 32) < 0.05 && px(&c, 61, 32) > 0.95);
    // fit: scaled to 64×32 and centred; the rows above and below repeat its edge rows.
    let f = resize_to(&img, 64, 64, ResizeMode::Fit);
    assert!(px(&f, 2, 0) < 0.05 && px(&f, 61, 63) > 0.95 && (px(&f, 10, 0) - px(&f, 10, 20)).abs() < 1e-6);
    // stretch: every column keeps its side.
    let s = resize_to(&img, 64, 64, ResizeMode::Stretch);
    assert!(px(&s, 2, 0) < 0.05 && px(&s, 61, 0) > 0.95);
    assert_eq!((round_to_multiple(60, 64), round_to_multiple(44, 64), round_to_multiple(100, 64), round_to_multiple(1000, 64), round_to_multiple(1, 64)), (64, 64, 128, 1024, 64));
    for m in ["crop", "fit", "stretch"] {
        assert_eq!(ResizeMode::parse(m).unwrap().name(), m);
    }
    assert!(ResizeMode::parse("zoom").is_err());
});

cpu_test!(decode_jpeg_and_refuse_garbage, || {
    let img = test_image(33, 17);
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 95).encode(&img.to_u8(), 33, 17, image::ExtendedColorType::Rgb8).unwrap();
    let back = decode_image(&jpg, "photo.jpg").unwrap();
    assert_eq!((back.width, back.height), (33, 17));
    let e = decode_image(b"not an image at all", "x.png").unwrap_err().to_string();
    assert!(e.contains("x.png") && e.contains("not a readable"), "{e}");
});
