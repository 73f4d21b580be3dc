//! A push parser for safetensors that never holds the whole file: feed it chunks as
//! they arrive (from `fetch()`, a file, a socket); it parses the 8-byte length and the
//! JSON header first, then hands out each tensor as soon as its last byte arrived.
//! Only one tensor's bytes are buffered at a time (the largest SD-1.5 tensor is 76 MB
//! in f16: the token embedding).
//!
//! Untrusted bytes: the header is checked as the `safetensors` crate's `validate()` does
//! (typed entries, no duplicate names, dtype × shape = byte length with checked
//! arithmetic, tensors contiguous from offset 0 and the data ending where the file ends),
//! every offset is converted to `usize` with a check (wasm32), and memory grows only with
//! the bytes that actually arrive (a header may promise any size).
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::weights::WeightError;

/// Headers above this are refused (real SD checkpoints have < 1 MB of header).
pub const MAX_HEADER: u64 = 100 << 20;

/// At most this is reserved ahead for one tensor (the largest SD / SDXL tensors are
/// < 300 MB); a tensor past it grows as its bytes arrive.
const RESERVE_LIMIT: usize = 1 << 30;

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
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The header as typed entries in file order; a name given twice is an error.
struct RawHeader {
    tensors: Vec<(String, RawInfo)>,
    metadata: HashMap<String, String>,
}

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawHeader, A::Error> {
                let mut out = RawHeader { tensors: Vec::new(), metadata: HashMap::new() };
                let mut seen: HashSet<String> = HashSet::new();
                while let Some(name) = m.next_key::<String>()? {
                    if seen.contains(&name) {
                        return Err(de::Error::custom(format!("tensor {name} is listed twice")));
                    }
                    if name == "__metadata__" {
                        out.metadata = m.next_value().map_err(|e| de::Error::custom(format!("__metadata__ must map strings to strings: {e}")))?;
                    } else {
                        let info: RawInfo = m.next_value().map_err(|e| de::Error::custom(format!("tensor {name}: bad header entry: {e}")))?;
                        out.tensors.push((name.clone(), info));
                    }
                    seen.insert(name);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
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
    /// Tensor name -> index in the header (for [`StreamParser::skip`]).
    index: HashMap<String, usize>,
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
            index: HashMap::new(),
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

    /// Do not buffer or return this tensor (call after the header event; O(1)). The
    /// chunk that ended the header may already have delivered the first tensors (as
    /// events) and part of the current one: that part is dropped here.
    pub fn skip(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            self.skip[i] = true;
            if i == self.next {
                self.buf = Vec::new();
            }
        }
    }

    /// Bytes the parser holds right now (the header or the tensor being received).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn err(&self, detail: impl Into<String>) -> WeightError {
        WeightError::Format { file: self.file.clone(), detail: detail.into() }
    }

    fn parse_header(&self, bytes: &[u8]) -> Result<Header, WeightError> {
        let raw: RawHeader = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => self.err(format!("bad header: {e}")),
            _ => self.err(format!("header is not valid JSON: {e}")),
        })?;
        let mut h = Header { data_start: 8 + bytes.len() as u64, metadata: raw.metadata, ..Default::default() };
        let data_len = self.total_len.map(|t| t.saturating_sub(h.data_start));
        for (name, info) in raw.tensors {
            let dtype = SrcDType::parse(&info.dtype)
                .ok_or_else(|| WeightError::DType { file: self.file.clone(), tensor: name.clone(), dtype: info.dtype.clone() })?;
            let (start, end) = info.data_offsets;
            let numel = info.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let want = numel.and_then(|n| n.checked_mul(dtype.size()));
            if end < start || want != Some(end - start) {
                return Err(self.err(format!(
                    "tensor {name}: offsets {start}..{end} do not hold shape {:?} of {}",
                    info.shape, info.dtype
                )));
            }
            if let Some(len) = data_len {
                if end > len {
                    return Err(self.err(format!("tensor {name}: offsets {start}..{end} lie outside the data ({len} bytes)")));
                }
            }
            if h.data_start.checked_add(end).is_none() || usize::try_from(end - start).is_err() {
                return Err(self.err(format!("tensor {name}: offsets {start}..{end} are too large for this platform")));
            }
            let shape = info.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<usize>, _>>()
                .map_err(|_| self.err(format!("tensor {name}: shape {:?} is too large for this platform", info.shape)))?;
            h.tensors.push(TensorInfo { name, dtype, shape, start, end });
        }
        h.tensors.sort_by_key(|t| (t.start, t.end));
        // Contiguous from offset 0, as the safetensors format requires (and its writers do).
        let mut at = 0u64;
        for (i, t) in h.tensors.iter().enumerate() {
            if t.start < at {
                let prev = &h.tensors[i - 1].name;
                return Err(self.err(format!("tensors {prev} and {} overlap", t.name)));
            }
            if t.start > at {
                return Err(self.err(format!("data bytes {at}..{} belong to no tensor (before tensor {})", t.start, t.name)));
            }
            at = t.end;
        }
        if let Some(len) = data_len {
            if at != len {
                return Err(self.err(format!("the data section has {} bytes after its last tensor", len - at)));
            }
        }
        Ok(h)
    }

    /// Data bytes the header accounts for (the end of the last tensor).
    fn data_end(h: &Header) -> u64 {
        h.tensors.last().map_or(0, |t| t.end)
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
                        self.index = h.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
                        self.header = Some(h.clone());
                        self.state = State::Data;
                        events.push(Event::Header(h));
                        self.complete_empty(&mut events);
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
        while !chunk.is_empty() {
            let h = self.header.as_ref().expect("data state has a header");
            let off = self.pos - h.data_start; // data offset of chunk[0]
            let Some(t) = h.tensors.get(self.next) else {
                let end = h.data_start + Self::data_end(h);
                return Err(self.err(format!("the data goes on after its last tensor (which ends at file byte {end})")));
            };
            // Tensors are contiguous (parse_header), so `off` is inside `t`; the sizes fit
            // usize (checked there).
            let need = usize::try_from(t.end - off).expect("checked in parse_header");
            let take = need.min(chunk.len());
            let skip = self.skip[self.next];
            let done = take == need;
            let info = (done && !skip).then(|| t.clone());
            if !skip {
                if self.buf.is_empty() && self.total_len.is_some() {
                    // The header was checked against the file's length: the whole tensor
                    // is coming (one allocation, no regrowth copies: wasm32 has little
                    // room), up to a bound in case the length lied. Without a known length
                    // the buffer grows with the bytes that arrive, never with what a
                    // header claims.
                    self.buf.reserve_exact(need.min(RESERVE_LIMIT));
                }
                self.buf.extend_from_slice(&chunk[..take]);
            }
            chunk = &chunk[take..];
            self.pos += take as u64;
            if done {
                if let Some(t) = info {
                    let data = std::mem::take(&mut self.buf);
                    events.push(Event::Tensor(t, data));
                }
                self.next += 1;
                self.complete_empty(events);
            }
        }
        Ok(())
    }

    /// Emit the zero-sized tensors at the current position.
    fn complete_empty(&mut self, events: &mut Vec<Event>) {
        let h = self.header.as_ref().expect("data state has a header");
        while let Some(z) = h.tensors.get(self.next) {
            if z.start == z.end && self.pos - h.data_start >= z.start {
                if !self.skip[self.next] {
                    events.push(Event::Tensor(z.clone(), Vec::new()));
                }
                self.next += 1;
            } else {
                break;
            }
        }
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
