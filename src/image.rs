//! PNG in and out: generated images carry their parameters in a `parameters` tEXt chunk
//! (AUTOMATIC1111's format); img2img reads an RGB(A) PNG.
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

/// Encode as PNG with a `parameters` tEXt chunk when given.
pub fn encode_png(img: &Rgb, parameters: Option<&str>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(p) = parameters {
            enc.add_text_chunk("parameters".into(), p.into()).map_err(|e| Error::Invalid(format!("PNG text chunk: {e}")))?;
        }
        let mut w = enc.write_header().map_err(|e| Error::Invalid(format!("PNG: {e}")))?;
        w.write_image_data(&img.to_u8()).map_err(|e| Error::Invalid(format!("PNG: {e}")))?;
    }
    Ok(out)
}

/// Decode a PNG (8-bit gray, RGB or RGBA; alpha dropped) into [0, 1] RGB.
pub fn decode_png(bytes: &[u8], name: &str) -> Result<Rgb> {
    let bad = |e: String| Error::Invalid(format!("{name}: not a readable PNG image: {e}"));
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| bad(e.to_string()))?;
    let size = reader.output_buffer_size().ok_or_else(|| bad("image too large".into()))?;
    if size > 64 << 20 {
        return Err(bad(format!("{size} bytes of pixels is too large")));
    }
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let ch = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(bad("indexed colour after expansion".into())),
    };
    let mut data = Vec::with_capacity(w * h * 3);
    for px in buf[..w * h * ch].chunks_exact(ch) {
        let (r, g, b) = if ch < 3 { (px[0], px[0], px[0]) } else { (px[0], px[1], px[2]) };
        data.extend([r, g, b].map(|v| v as f32 / 255.0));
    }
    Ok(Rgb { width: w, height: h, data })
}

/// Read the `parameters` tEXt chunk of a PNG, if any.
pub fn png_parameters(bytes: &[u8]) -> Option<String> {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = dec.read_info().ok()?;
    reader.info().uncompressed_latin1_text.iter().find(|t| t.keyword == "parameters").map(|t| t.text.clone())
}
