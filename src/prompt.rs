//! AUTOMATIC1111's prompt syntax, as diffusers' community pipeline `lpw_stable_diffusion.py`
//! ("long prompt weighting", LPW) implements it:
//!
//! - attention weights: `(words)` ×1.1, `[words]` ÷1.1, `(words:1.3)` ×1.3, nestable;
//!   `\(` `\)` `\[` `\]` `\\` are the literal characters ([`parse_attention`]);
//! - long prompts: up to 3 chunks of 75 tokens, each encoded by CLIP on its own as start
//!   token + 75 tokens + end token, concatenated to 77·k positions ([`lpw_tokens`]);
//! - A1111's LoRA tags `<lora:NAME>` / `<lora:NAME:0.8>`, taken out of the text before it
//!   is encoded ([`extract_loras`]).
//!
//! The weighting itself (`x·w` per position, then the mean over all 77·k × C values restored)
//! runs on the GPU: [`crate::ops::prompt_weighting`].
use crate::error::Result;
use crate::tokenizer::ClipTokenizer;

/// Prompt tokens per chunk (CLIP's 77 positions less the start and end tokens).
pub const CHUNK_TOKENS: usize = 75;
/// Chunks per prompt at most (LPW's `max_embeddings_multiples = 3`): 225 prompt tokens.
pub const MAX_CHUNKS: usize = 3;
/// Positions per chunk (start token + [`CHUNK_TOKENS`] + end token).
pub const CHUNK_LEN: usize = CHUNK_TOKENS + 2;

/// The zeros of Unicode's decimal digits (category Nd, Unicode 14 as Python 3.11's `re` and
/// `float()` know them): every zero is followed by its digits 1…9, so a digit's value is its
/// distance to the zero below it.
const ND_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810,
    0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30,
    0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60,
    0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a decimal digit (`\d` of Python's `re` on str: any Unicode Nd character).
fn decimal_digit(c: char) -> Option<u32> {
    let c = c as u32;
    let i = ND_ZEROS.partition_point(|&z| z <= c);
    let z = *ND_ZEROS.get(i.checked_sub(1)?)?;
    (c - z < 10).then_some(c - z)
}

/// One match of LPW's `re_attention`.
enum Token<'a> {
    /// `\(` `\)` `\[` `\]` `\\` (the character after the backslash) or a lone `\` (empty).
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:1.3)`: the whole match and the weight.
    Weight(&'a str, f64),
    CloseRound,
    CloseSquare,
    /// A run of anything else, or a `:` that does not start a weight.
    Text(&'a str),
}

/// The number of `:NUMBER)` at the start of `s` (which starts with `:`): `[+-]?[.\d]+` then
/// `)`, as the regex matches it; the number as Python's `float()` reads it. `None` when the
/// regex does not match, or when `float()` would refuse the number (`:1.2.3)`, `:.)`: LPW
/// raises ValueError there; here the `:` is plain text).
fn weight_at(s: &str) -> Option<(usize, f64)> {
    let mut num = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    if let Some(&(_, c @ ('+' | '-'))) = chars.peek() {
        num.push(c);
        chars.next();
    }
    let mut any = false;
    for (i, c) in chars {
        if c == '.' {
            num.push('.');
        } else if let Some(d) = decimal_digit(c) {
            num.push(char::from_digit(d, 10)?);
        } else if c == ')' && any {
            return Some((i + 1, num.parse().ok()?));
        } else {
            return None;
        }
        any = true;
    }
    None
}

/// The matches of LPW's `re_attention` (alternatives tried in its order at each position).
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let c = rest.chars().next().unwrap_or('\0');
        let (tok, len) = match c {
            '\\' => match rest[1..].chars().next() {
                Some(e @ ('(' | ')' | '[' | ']' | '\\')) => (Token::Escaped(&rest[1..2]), 1 + e.len_utf8()),
                _ => (Token::Escaped(""), 1),
            },
            '(' => (Token::OpenRound, 1),
            '[' => (Token::OpenSquare, 1),
            ':' => match weight_at(rest) {
                Some((n, w)) => (Token::Weight(&rest[..n], w), n),
                None => (Token::Text(":"), 1),
            },
            ')' => (Token::CloseRound, 1),
            ']' => (Token::CloseSquare, 1),
            _ => {
                let n = rest.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(rest.len());
                (Token::Text(&rest[..n]), n)
            }
        };
        out.push(tok);
        i += len;
    }
    out
}

/// A prompt as (text, weight) runs, exactly as LPW's (and A1111's) `parse_prompt_attention`:
/// `(x)` multiplies the weight of x by 1.1, `[x]` divides it by 1.1, `(x:1.3)` multiplies it
/// by 1.3 (f64, in the order the brackets close); brackets left open apply to the end;
/// a `)` or `]` with nothing to close is ignored; `\(` `\)` `\[` `\]` `\\` are the literal
/// characters, a lone `\` disappears; adjacent runs of equal weight are merged; an empty
/// prompt is `[("", 1.0)]`. A weight that Python's `float()` refuses (`(x:1.2.3)`) makes
/// LPW raise; here its `:` is text.
pub fn parse_attention(text: &str) -> Vec<(String, f64)> {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<(String, f64)>, from: usize, m: f64| {
        for r in &mut res[from..] {
            r.1 *= m;
        }
    };
    for t in tokens(text) {
        match t {
            Token::Escaped(s) => res.push((s.to_string(), 1.0)),
            Token::OpenRound => round.push(res.len()),
            Token::OpenSquare => square.push(res.len()),
            Token::Weight(s, w) => match round.pop() {
                Some(p) => multiply(&mut res, p, w),
                None => res.push((s.to_string(), 1.0)),
            },
            Token::CloseRound => match round.pop() {
                Some(p) => multiply(&mut res, p, 1.1),
                None => res.push((")".into(), 1.0)),
            },
            Token::CloseSquare => match square.pop() {
                Some(p) => multiply(&mut res, p, 1.0 / 1.1),
                None => res.push(("]".into(), 1.0)),
            },
            Token::Text(s) => res.push((s.to_string(), 1.0)),
        }
    }
    for p in round {
        multiply(&mut res, p, 1.1);
    }
    for p in square {
        multiply(&mut res, p, 1.0 / 1.1);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    let mut i = 0;
    while i + 1 < res.len() {
        if res[i].1 == res[i + 1].1 {
            let next = res.remove(i + 1);
            res[i].0.push_str(&next.0);
        } else {
            i += 1;
        }
    }
    res
}

/// A1111's LoRA tags taken out of a prompt: `<lora:NAME>` (multiplier 1) and
/// `<lora:NAME:MULTIPLIER>` are removed from the text (replaced by nothing, as A1111 does)
/// and returned in prompt order. A tag that does not close, has an empty name, more fields
/// or a multiplier that is not a finite number stays in the text as it is.
pub fn extract_loras(prompt: &str) -> (String, Vec<(String, f32)>) {
    const OPEN: &str = "<lora:";
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(at) = rest.find(OPEN) {
        text.push_str(&rest[..at]);
        let after = &rest[at + OPEN.len()..];
        let tag = after.find('>').and_then(|close| {
            let args = &after[..close];
            let mut parts = args.split(':');
            let name = parts.next().filter(|n| !n.is_empty())?;
            let multiplier = match (parts.next(), parts.next()) {
                (None, _) => 1.0,
                (Some(m), None) => m.trim().parse::<f32>().ok().filter(|m| m.is_finite())?,
                _ => return None,
            };
            Some((name.to_string(), multiplier, close))
        });
        match tag {
            Some((name, m, close)) => {
                tags.push((name, m));
                rest = &after[close + 1..];
            }
            None => {
                // Not a tag: keep its `<` and look for the next one after it.
                text.push('<');
                rest = &rest[at + 1..];
            }
        }
    }
    text.push_str(rest);
    (text, tags)
}

/// A prompt's tokens and their weights (LPW's `get_prompts_with_weights`): each run of
/// [`parse_attention`] tokenised on its own without start / end tokens, all runs
/// concatenated, cut at [`MAX_CHUNKS`] · [`CHUNK_TOKENS`].
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedTokens {
    /// The runs of [`parse_attention`].
    pub parsed: Vec<(String, f64)>,
    pub ids: Vec<u32>,
    /// One per id (f64 as LPW computes them; the GPU gets them as f32).
    pub weights: Vec<f64>,
    /// Tokens beyond [`MAX_CHUNKS`] · [`CHUNK_TOKENS`] that were cut.
    pub dropped: usize,
}

impl WeightedTokens {
    pub fn new(tok: &ClipTokenizer, text: &str) -> Result<WeightedTokens> {
        let parsed = parse_attention(text);
        let (mut ids, mut weights) = (Vec::new(), Vec::new());
        for (run, w) in &parsed {
            let t = tok.encode_raw(run)?;
            weights.extend(std::iter::repeat_n(*w, t.len()));
            ids.extend(t);
        }
        let max = MAX_CHUNKS * CHUNK_TOKENS;
        let dropped = ids.len().saturating_sub(max);
        ids.truncate(max);
        weights.truncate(max);
        Ok(WeightedTokens { parsed, ids, weights, dropped })
    }

    /// LPW's padded ids (`pad_tokens_and_weights`): start token, the ids, pad ids, end
    /// token: 75·k + 2 ids.
    pub fn padded_ids(&self, tok: &ClipTokenizer, chunks: usize) -> Vec<u32> {
        let len = CHUNK_TOKENS * chunks + 2;
        let mut out = Vec::with_capacity(len);
        out.push(tok.start_id());
        out.extend(self.ids.iter().take(len - 2));
        out.resize(len - 1, tok.pad_id());
        out.push(tok.end_id());
        out
    }

    /// The ids the text encoder gets (LPW's `get_unweighted_text_embeddings`): chunk j is
    /// the start token, ids 75j … 75j + 74 of [`WeightedTokens::padded_ids`]'s body (pad ids
    /// past the end), the end token: 77·k ids.
    pub fn chunk_ids(&self, tok: &ClipTokenizer, chunks: usize) -> Vec<u32> {
        let padded = self.padded_ids(tok, chunks);
        let mut out = Vec::with_capacity(CHUNK_LEN * chunks);
        for j in 0..chunks {
            out.push(tok.start_id());
            out.extend(&padded[CHUNK_TOKENS * j + 1..CHUNK_TOKENS * (j + 1) + 1]);
            out.push(tok.end_id());
        }
        out
    }

    /// The weight of each of the 77·k positions (`pad_tokens_and_weights` with
    /// `no_boseos_middle=False`): 1 at the start and end tokens and the padding.
    pub fn chunk_weights(&self, chunks: usize) -> Vec<f32> {
        let len = CHUNK_LEN * chunks;
        let mut w: Vec<f64> = Vec::with_capacity(len);
        if !self.weights.is_empty() {
            for j in 0..chunks {
                w.push(1.0);
                let (a, b) = ((j * CHUNK_TOKENS).min(self.weights.len()), ((j + 1) * CHUNK_TOKENS).min(self.weights.len()));
                w.extend(&self.weights[a..b]);
                w.push(1.0);
            }
        }
        w.resize(len, 1.0);
        w.truncate(len);
        w.into_iter().map(|v| v as f32).collect()
    }
}

/// The chunk count for prompts of these token counts (LPW: the longest rounded up to
/// chunks of 75, at least 1, at most [`MAX_CHUNKS`]).
pub fn chunk_count(token_counts: &[usize]) -> usize {
    let longest = token_counts.iter().copied().max().unwrap_or(0);
    if longest == 0 {
        1
    } else {
        ((longest - 1) / CHUNK_TOKENS + 1).clamp(1, MAX_CHUNKS)
    }
}

/// A generation's prompt and (with classifier-free guidance) negative prompt, tokenised
/// and weighted as LPW's `get_weighted_text_embeddings`, both padded to the same chunk count.
#[derive(Clone, Debug, PartialEq)]
pub struct LpwTokens {
    pub chunks: usize,
    pub prompt: WeightedTokens,
    pub negative: Option<WeightedTokens>,
}

/// [`LpwTokens`] of `prompt` and, with guidance, `negative` (LPW's default: `""`).
pub fn lpw_tokens(tok: &ClipTokenizer, prompt: &str, negative: Option<&str>) -> Result<LpwTokens> {
    let prompt = WeightedTokens::new(tok, prompt)?;
    let negative = negative.map(|n| WeightedTokens::new(tok, n)).transpose()?;
    let mut counts = vec![prompt.ids.len()];
    counts.extend(negative.iter().map(|n| n.ids.len()));
    Ok(LpwTokens { chunks: chunk_count(&counts), prompt, negative })
}
