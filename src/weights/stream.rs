//! A push parser for safetensors that never holds the whole file: feed it chunks as
//! they arrive (from `fetch()`, a file, a socket); it parses the 8-byte length and the
//! JSON header first, then hands out each tensor as soon as its last byte arrived.
//! Only one tensor's bytes are buffered at a time (the largest SD-1.5 tensor is 76 MB
//! in f16: the token embedding).
use std::collections::{BTreeMap, HashMap};

use crate::weights::WeightError;

/// Headers above this are refused (real SD checkpoints have < 1 MB of header).
pub const MAX_HEADER: u64 = 100 << 20;

/// Source dtypes of safetensors. Only F32, F16 and BF16 become GPU tensors; the others
/// are recognised so that harmless extras (e.g. I64 `position_ids`) can be skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    U16,
    U32,
    U64,
    F8E4M3,
    F8E5M2,
}

impl SrcDType {
    pub fn parse(s: &str) -> Option<SrcDType> {
        Some(match s {
            "F64" => SrcDType::F64,
            "F32" => SrcDType::F32,
            "F16" => SrcDType::F16,
            "BF16" => SrcDType::BF16,
            "I64" => SrcDType::I64,
            "I32" => SrcDType::I32,
            "I16" => SrcDType::I16,
            "I8" => SrcDType::I8,
            "U8" => SrcDType::U8,
            "BOOL" => SrcDType::Bool,
            "U16" => SrcDType::U16,
            "U32" => SrcDType::U32,
            "U64" => SrcDType::U64,
            "F8_E4M3" => SrcDType::F8E4M3,
            "F8_E5M2" => SrcDType::F8E5M2,
            _ => return None,
        })
    }
    pub fn size(self) -> u64 {
        match self {
            SrcDType::F64 | SrcDType::I64 | SrcDType::U64 => 8,
            SrcDType::F32 | SrcDType::I32 | SrcDType::U32 => 4,
            SrcDType::F16 | SrcDType::BF16 | SrcDType::I16 | SrcDType::U16 => 2,
            _ => 1,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, SrcDType::F32 | SrcDType::F16 | SrcDType::BF16)
    }
}

/// One tensor of the header; offsets relative to the start of the data section.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: SrcDType,
    pub shape: Vec<usize>,
    pub start: u64,
    pub end: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Header {
    /// Sorted by start offset.
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, String>,
    /// Byte offset of the data section in the file (8 + header length).
    pub data_start: u64,
}

#[derive(serde::Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// What a call to [`StreamParser::feed`] produced.
pub enum Event {
    Header(Header),
    /// A tensor whose bytes are all here (little-endian, as stored).
    Tensor(TensorInfo, Vec<u8>),
}

enum State {
    Len,
    Header(u64),
    Data,
}

pub struct StreamParser {
    file: String,
    total_len: Option<u64>,
    state: State,
    buf: Vec<u8>,
    /// File offset of the next byte fed.
    pos: u64,
    header: Option<Header>,
    /// Index of the next tensor to complete.
    next: usize,
    skip: Vec<bool>,
}

impl StreamParser {
    /// `total_len`: the file size when known (Content-Length, file metadata); it lets
    /// the header be checked against the file before any tensor data arrives.
    pub fn new(file: impl Into<String>, total_len: Option<u64>) -> Self {
        StreamParser {
            file: file.into(),
            total_len,
            state: State::Len,
            buf: Vec::new(),
            pos: 0,
            header: None,
            next: 0,
            skip: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }
    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Do not buffer or return this tensor (call after the header event).
    pub fn skip(&mut self, name: &str) {
        if let Some(h) = &self.header {
            if let Some(i) = h.tensors.iter().position(|t| t.name == name) {
                self.skip[i] = true;
            }
        }
    }

    fn err(&self, detail: impl Into<String>) -> WeightError {
        WeightError::Format { file: self.file.clone(), detail: detail.into() }
    }

    fn parse_header(&self, bytes: &[u8]) -> Result<Header, WeightError> {
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| self.err(format!("header is not valid JSON: {e}")))?;
        let mut h = Header { data_start: 8 + bytes.len() as u64, ..Default::default() };
        for (name, v) in raw {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, val) in m {
                        h.metadata.insert(k.clone(), val.as_str().unwrap_or_default().to_string());
                    }
                }
                continue;
            }
            let info: RawInfo = serde_json::from_value(v)
                .map_err(|e| self.err(format!("tensor {name}: bad header entry: {e}")))?;
            let dtype = SrcDType::parse(&info.dtype)
                .ok_or_else(|| WeightError::DType { file: self.file.clone(), tensor: name.clone(), dtype: info.dtype.clone() })?;
            let (start, end) = info.data_offsets;
            let numel = info.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let want = numel.and_then(|n| n.checked_mul(dtype.size()));
            if end < start || want != Some(end - start) {
                return Err(self.err(format!(
                    "tensor {name}: offsets {start}..{end} do not hold shape {:?} of {}",
                    info.shape, info.dtype
                )));
            }
            if let Some(total) = self.total_len {
                if h.data_start + end > total {
                    return Err(self.err(format!(
                        "tensor {name}: offsets {start}..{end} lie outside the data ({} bytes)",
                        total - h.data_start
                    )));
                }
            }
            h.tensors.push(TensorInfo { name, dtype, shape: info.shape, start, end });
        }
        h.tensors.sort_by_key(|t| (t.start, t.end));
        for w in h.tensors.windows(2) {
            if w[1].start < w[0].end {
                return Err(self.err(format!("tensors {} and {} overlap", w[0].name, w[1].name)));
            }
        }
        Ok(h)
    }

    /// Feed the next chunk of the file.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<Event>, WeightError> {
        let mut events = Vec::new();
        while !chunk.is_empty() {
            match self.state {
                State::Len => {
                    let take = (8 - self.buf.len()).min(chunk.len());
                    self.buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    self.pos += take as u64;
                    if self.buf.len() == 8 {
                        let n = u64::from_le_bytes(self.buf[..8].try_into().unwrap());
                        if n > MAX_HEADER {
                            return Err(self.err(format!("header length {n} bytes is absurdly large (limit {MAX_HEADER}); not a safetensors file?")));
                        }
                        if let Some(total) = self.total_len {
                            if 8 + n > total {
                                return Err(self.err(format!("header length {n} is longer than the file ({total} bytes)")));
                            }
                        }
                        self.buf.clear();
                        self.state = State::Header(n);
                    }
                }
                State::Header(n) => {
                    let take = (n as usize - self.buf.len()).min(chunk.len());
                    self.buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    self.pos += take as u64;
                    if self.buf.len() as u64 == n {
                        let h = self.parse_header(&self.buf)?;
                        self.buf = Vec::new();
                        self.skip = vec![false; h.tensors.len()];
                        self.header = Some(h.clone());
                        self.state = State::Data;
                        events.push(Event::Header(h));
                    }
                }
                State::Data => {
                    self.feed_data(chunk, &mut events)?;
                    chunk = &[];
                }
            }
        }
        Ok(events)
    }

    fn feed_data(&mut self, mut chunk: &[u8], events: &mut Vec<Event>) -> Result<(), WeightError> {
        let h = self.header.as_ref().expect("data state has a header");
        let ds = h.data_start;
        while !chunk.is_empty() {
            let off = self.pos - ds; // data offset of chunk[0]
            let Some(t) = h.tensors.get(self.next) else {
                // Trailing bytes after the last tensor: ignore.
                self.pos += chunk.len() as u64;
                return Ok(());
            };
            if off < t.start {
                let gap = ((t.start - off) as usize).min(chunk.len());
                chunk = &chunk[gap..];
                self.pos += gap as u64;
                continue;
            }
            let need = (t.end - off) as usize;
            let take = need.min(chunk.len());
            let skip = self.skip[self.next];
            if !skip {
                if self.buf.is_empty() {
                    self.buf.reserve_exact((t.end - t.start) as usize);
                }
                self.buf.extend_from_slice(&chunk[..take]);
            }
            chunk = &chunk[take..];
            self.pos += take as u64;
            if take == need {
                if !skip {
                    let data = std::mem::take(&mut self.buf);
                    events.push(Event::Tensor(t.clone(), data));
                }
                self.next += 1;
                // Zero-sized tensors complete at once.
                while let Some(z) = h.tensors.get(self.next) {
                    if z.start == z.end && self.pos - ds >= z.start {
                        if !self.skip[self.next] {
                            events.push(Event::Tensor(z.clone(), Vec::new()));
                        }
                        self.next += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: every tensor must have arrived.
    pub fn finish(&self) -> Result<(), WeightError> {
        match (&self.state, &self.header) {
            (State::Data, Some(h)) => {
                if let Some(t) = h.tensors.get(self.next) {
                    return Err(WeightError::Truncated {
                        file: self.file.clone(),
                        tensor: t.name.clone(),
                        at: self.pos,
                        needed: h.data_start + t.end,
                    });
                }
                Ok(())
            }
            _ => Err(self.err(format!("file ends after {} bytes, inside the header", self.pos))),
        }
    }
}
