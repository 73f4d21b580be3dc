//! Any text as a UNet, VAE and CLIP config.json: a clear error or a config within bounds,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sd_webgpu::model::config::{ClipConfig, UnetConfig, VaeConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = UnetConfig::from_json("unet/config.json", text);
    let _ = VaeConfig::from_json("vae/config.json", text);
    let _ = ClipConfig::from_json("text_encoder/config.json", text);
});
