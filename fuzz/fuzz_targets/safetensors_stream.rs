//! Any bytes through the streaming safetensors parser, in chunks: it must end in Ok or an
//! error (no panic, no hang), and hold no more memory than the bytes that arrived allow.
//! The first input byte chooses the chunking, whether the file length is known and which
//! tensors are skipped; the rest is the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sd_webgpu::weights::stream::{Event, StreamParser};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, file)) = data.split_first() else { return };
    let total = (ctl & 1 == 1).then_some(file.len() as u64);
    let chunk = 1 + ((ctl >> 1) & 0x1f) as usize * 61;
    let skip_odd = ctl & 0x40 != 0;
    let mut p = StreamParser::new("fuzz.safetensors", total);
    let mut fed = 0usize;
    for c in file.chunks(chunk) {
        fed += c.len();
        match p.feed(c) {
            Ok(events) => {
                for e in events {
                    if let Event::Header(h) = e {
                        if skip_odd {
                            let names: Vec<String> = h.tensors.iter().skip(1).step_by(2).map(|t| t.name.clone()).collect();
                            for n in names {
                                p.skip(&n);
                            }
                        }
                    }
                }
            }
            Err(_) => return,
        }
        let bound = 2 * fed + 64 + total.unwrap_or(0) as usize;
        assert!(p.buffered_capacity() <= bound, "parser holds {} bytes after {fed} fed", p.buffered_capacity());
    }
    let _ = p.finish();
});
