//! PNG in and out: generated images carry their parameters in a `parameters` text chunk
//! (AUTOMATIC1111's format: tEXt when the text is Latin-1, iTXt (UTF-8) otherwise, as PIL
//! writes it); img2img reads an RGB(A) PNG.
use crate::error::{Error, Result};

/// An RGB image, values in [0, 1], row-major [H, W, 3].
#[derive(Clone, Debug)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Rgb {
    /// 8-bit RGB as diffusers converts: round(x · 255).
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }
    /// 8-bit RGBA (alpha 255), e.g. for an ImageData.
    pub fn to_rgba8(&self) -> Vec<u8> {
        self.to_u8().chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
    }
}

/// A PNG and what could not be put into it.
#[derive(Clone, Debug)]
pub struct Png {
    pub bytes: Vec<u8>,
    /// Set when the parameters could not be stored: the image is written without them.
    pub warning: Option<String>,
}

/// Whether PIL (and so AUTOMATIC1111) would write `text` as tEXt: every character Latin-1.
pub fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| (c as u32) <= 0xFF)
}

fn write_png(img: &Rgb, keyword: &str, parameters: Option<&str>) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(p) = parameters {
            if is_latin1(p) {
                enc.add_text_chunk(keyword.into(), p.into())?;
            } else {
                enc.add_itxt_chunk(keyword.into(), p.into())?;
            }
        }
        let mut w = enc.write_header()?;
        w.write_image_data(&img.to_u8())?;
    }
    Ok(out)
}

/// Encode as PNG with a `parameters` chunk when given: tEXt for Latin-1 text, iTXt (UTF-8)
/// otherwise. The metadata never costs the image: if the chunk cannot be written, the PNG is
/// made without it and [`Png::warning`] says why. Errors only when the pixels cannot be
/// encoded (an empty or oversized image).
pub fn encode_png(img: &Rgb, parameters: Option<&str>) -> Result<Png> {
    encode_png_text(img, "parameters", parameters)
}

/// [`encode_png`] with a text chunk of another keyword (PNG keywords are 1–79 Latin-1
/// characters; a bad one costs the chunk, not the image).
pub fn encode_png_text(img: &Rgb, keyword: &str, text: Option<&str>) -> Result<Png> {
    if img.data.len() != img.width * img.height * 3 {
        return Err(Error::Invalid(format!("PNG: {} values for a {}×{} RGB image", img.data.len(), img.width, img.height)));
    }
    match write_png(img, keyword, text) {
        Ok(bytes) => Ok(Png { bytes, warning: None }),
        Err(e) if text.is_some() => {
            let bytes = write_png(img, keyword, None).map_err(|e| Error::Invalid(format!("PNG: {e}")))?;
            Ok(Png { bytes, warning: Some(format!("the generation parameters could not be stored in the PNG ({e}); the image was saved without them")) })
        }
        Err(e) => Err(Error::Invalid(format!("PNG: {e}"))),
    }
}

/// Decode a PNG (8-bit gray, RGB or RGBA; alpha dropped) into [0, 1] RGB.
pub fn decode_png(bytes: &[u8], name: &str) -> Result<Rgb> {
    decode_image(bytes, name)
}

/// Largest image accepted as an img2img input (pixels per side).
pub const MAX_INPUT_SIDE: u32 = 16384;
/// Most pixels of an img2img input (a 40-megapixel photo, 8000×5000: ~480 MB as the f32 RGB
/// the resize reads, inside wasm32's memory next to the model's working set).
pub const MAX_INPUT_PIXELS: u64 = 40_000_000;
/// Most output pixels of one generation, batch × width × height (16 images of 1024², 4 of
/// 2048²): the images are read back and encoded in (wasm) memory at ~20 bytes per pixel.
pub const MAX_OUTPUT_PIXELS: u64 = 16 * 1024 * 1024;

/// Why an img2img input of `width`×`height` cannot be taken, if it cannot.
pub fn input_size_problem(width: u64, height: u64) -> Option<String> {
    let side = MAX_INPUT_SIDE as u64;
    if width == 0 || height == 0 || width > side || height > side {
        return Some(format!("the start image is {width}×{height}: it must be between 1 and {side} pixels on a side"));
    }
    let px = width * height;
    (px > MAX_INPUT_PIXELS).then(|| format!("the start image is {width}×{height} ({:.1} megapixels): at most {} megapixels are taken; scale it down first", px as f64 / 1e6, MAX_INPUT_PIXELS / 1_000_000))
}

/// Decode a PNG or JPEG (any bit depth; alpha dropped) into [0, 1] RGB. The size is checked
/// before the pixels are allocated.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<Rgb> {
    let bad = |e: String| Error::Invalid(format!("{name}: not a readable PNG or JPEG image: {e}"));
    let rgb = decode_limited(bytes, name, "image")?.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if w == 0 || h == 0 {
        return Err(bad("the image is empty".into()));
    }
    Ok(Rgb { width: w, height: h, data: rgb.into_raw().into_iter().map(|v| v as f32 / 255.0).collect() })
}

/// Decode a PNG or JPEG within the input limits (`what`: the word in the message).
pub fn decode_limited(bytes: &[u8], name: &str, what: &str) -> Result<image::DynamicImage> {
    let bad = |e: String| Error::Invalid(format!("{name}: not a readable PNG or JPEG {what}: {e}"));
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    reader.decode().map_err(|e| bad(e.to_string()))
}

/// How an img2img image is fitted to the output size (AUTOMATIC1111's resize modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResizeMode {
    /// "Crop and resize": scale to cover the output, centre, crop what sticks out (default).
    #[default]
    Crop,
    /// "Resize and fill": scale to fit inside the output, centre, fill the rest by
    /// stretching the image's edge pixels outwards.
    Fit,
    /// "Just resize": scale each axis to the output size (the aspect ratio may change).
    Stretch,
}

impl ResizeMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "crop" => Ok(ResizeMode::Crop),
            "fit" => Ok(ResizeMode::Fit),
            "stretch" => Ok(ResizeMode::Stretch),
            other => Err(Error::Invalid(format!("resize mode must be crop, fit or stretch (got {other:?})"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::Crop => "crop",
            ResizeMode::Fit => "fit",
            ResizeMode::Stretch => "stretch",
        }
    }
    /// The words A1111 writes in its parameters (`Resize mode: …`).
    pub fn a1111(self) -> &'static str {
        match self {
            ResizeMode::Crop => "Crop and resize",
            ResizeMode::Fit => "Resize and fill",
            ResizeMode::Stretch => "Just resize",
        }
    }
}

/// `len` rounded to the nearest positive multiple of `m` (halves round up).
pub fn round_to_multiple(len: usize, m: usize) -> usize {
    (((len + m / 2) / m) * m).max(m)
}

/// Lanczos-3 resampling of an RGB image to `w`×`h` (PIL's `Image.LANCZOS`, what A1111 and
/// diffusers' image processor use); values clamped to [0, 1].
pub fn resample(img: &Rgb, w: usize, h: usize) -> Rgb {
    if img.width == w && img.height == h {
        return img.clone();
    }
    let src = image::Rgb32FImage::from_raw(img.width as u32, img.height as u32, img.data.clone()).expect("RGB buffer of the image's size");
    let out = image::imageops::resize(&src, w as u32, h as u32, image::imageops::FilterType::Lanczos3);
    Rgb { width: w, height: h, data: out.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect() }
}

/// Fit `img` to `w`×`h` as AUTOMATIC1111's `resize_image` does for `mode` (the same integer
/// arithmetic for the scaled size and the centring).
pub fn resize_to(img: &Rgb, w: usize, h: usize, mode: ResizeMode) -> Rgb {
    let (iw, ih) = (img.width, img.height);
    if (iw, ih) == (w, h) {
        return img.clone();
    }
    let ratio = w as f64 / h as f64;
    let src_ratio = iw as f64 / ih as f64;
    let (sw, sh) = match mode {
        ResizeMode::Stretch => return resample(img, w, h),
        ResizeMode::Crop => (if ratio > src_ratio { w } else { iw * h / ih }, if ratio <= src_ratio { h } else { ih * w / iw }),
        ResizeMode::Fit => (if ratio < src_ratio { w } else { iw * h / ih }, if ratio >= src_ratio { h } else { ih * w / iw }),
    };
    let scaled = resample(img, sw.max(1), sh.max(1));
    // Centre the scaled image on the output: crop overflows (Crop), clamp to the nearest
    // edge pixel where it does not cover (Fit: the edge rows / columns stretched outwards).
    let ox = (w / 2) as isize - (scaled.width / 2) as isize;
    let oy = (h / 2) as isize - (scaled.height / 2) as isize;
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h as isize {
        let sy = (y - oy).clamp(0, scaled.height as isize - 1) as usize;
        for x in 0..w as isize {
            let sx = (x - ox).clamp(0, scaled.width as isize - 1) as usize;
            let i = (sy * scaled.width + sx) * 3;
            data.extend_from_slice(&scaled.data[i..i + 3]);
        }
    }
    Rgb { width: w, height: h, data }
}

/// Read the `parameters` text chunk of a PNG (tEXt, zTXt or iTXt), if any.
pub fn png_parameters(bytes: &[u8]) -> Option<String> {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = dec.read_info().ok()?;
    let info = reader.info();
    let key = "parameters";
    if let Some(t) = info.uncompressed_latin1_text.iter().find(|t| t.keyword == key) {
        return Some(t.text.clone());
    }
    if let Some(t) = info.compressed_latin1_text.iter().find(|t| t.keyword == key) {
        return t.get_text().ok();
    }
    info.utf8_text.iter().find(|t| t.keyword == key).and_then(|t| t.get_text().ok())
}

/// The kind of chunk (`"tEXt"`, `"zTXt"` or `"iTXt"`) holding the `parameters` text.
pub fn png_parameters_chunk(bytes: &[u8]) -> Option<&'static str> {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = dec.read_info().ok()?;
    let info = reader.info();
    let key = "parameters";
    if info.uncompressed_latin1_text.iter().any(|t| t.keyword == key) {
        Some("tEXt")
    } else if info.compressed_latin1_text.iter().any(|t| t.keyword == key) {
        Some("zTXt")
    } else if info.utf8_text.iter().any(|t| t.keyword == key) {
        Some("iTXt")
    } else {
        None
    }
}
