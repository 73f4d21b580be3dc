//! The CLIP BPE tokenizer of Stable Diffusion 1.x, built on the `tokenizers` crate (the Rust
//! core of Hugging Face's fast tokenizers; its `unstable_wasm` feature uses fancy-regex, so it
//! runs in the browser too).
//!
//! Two ways in: the files of the diffusers repo (`tokenizer/vocab.json`, `merges.txt`,
//! `tokenizer_config.json`: SD 1.5 has no `tokenizer.json`), rebuilt as transformers'
//! `CLIPTokenizerFast` does it; or a `tokenizer.json` where a model has one.
//!
//! Every prompt becomes exactly [`MAX_LEN`] ids: start token, at most 75 prompt tokens, end
//! token, then the pad token. How many prompt tokens truncation cut is reported so the UI can
//! tell the user.
use crate::error::{Error, Result};
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior, Tokenizer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

/// Length of every encoded prompt: CLIP's text encoder has 77 positions.
pub const MAX_LEN: usize = 77;

/// CLIP's pre-tokenization pattern (transformers' `CLIPTokenizer.pat`, as in its tokenizer.json).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";

/// An encoded prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly [`MAX_LEN`] ids: start token, prompt tokens, end token, pad tokens.
    pub ids: Vec<u32>,
    /// How many prompt tokens were cut to fit [`MAX_LEN`] (0 when the prompt fits).
    pub dropped_tokens: usize,
}

/// The CLIP tokenizer of SD 1.x, padded and truncated to [`MAX_LEN`].
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    /// The same tokenizer without truncation and padding, for [`ClipTokenizer::encode_raw`].
    raw: Tokenizer,
    start_id: u32,
    end_id: u32,
    pad_id: u32,
}

fn err(detail: impl Into<String>) -> Error {
    Error::Unsupported { op: "tokenizer", detail: detail.into() }
}

/// The special tokens named in `tokenizer_config.json` (each a string or `{"content": …}`).
struct SpecialTokens {
    bos: String,
    eos: String,
    unk: String,
    pad: Option<String>,
}

impl SpecialTokens {
    fn parse(config_json: Option<&str>) -> Result<Self> {
        let config: serde_json::Value = match config_json {
            Some(text) => serde_json::from_str(text).map_err(|e| err(format!("tokenizer_config.json is not valid JSON: {e}")))?,
            None => serde_json::Value::Null,
        };
        let field = |name: &str| -> Result<Option<String>> {
            match config.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => match v.get("content").and_then(|c| c.as_str()) {
                    Some(s) => Ok(Some(s.to_owned())),
                    None => Err(err(format!("tokenizer_config.json: `{name}` is neither a string nor an object with `content`: {v}"))),
                },
            }
        };
        Ok(Self {
            bos: field("bos_token")?.unwrap_or_else(|| DEFAULT_BOS.into()),
            eos: field("eos_token")?.unwrap_or_else(|| DEFAULT_EOS.into()),
            unk: field("unk_token")?.unwrap_or_else(|| DEFAULT_EOS.into()),
            pad: field("pad_token")?,
        })
    }
}

fn parse_vocab(vocab_json: &str) -> Result<Vocab> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(vocab_json).map_err(|e| err(format!("vocab.json is not a JSON object of token → id: {e}")))?;
    map.into_iter()
        .map(|(token, id)| match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) => Ok((token, id)),
            None => Err(err(format!("vocab.json: token {token:?} has id {id}, expected an integer id"))),
        })
        .collect()
}

fn parse_merges(merges_txt: &str) -> Result<Merges> {
    merges_txt
        .lines()
        .enumerate()
        .filter(|(i, line)| (*i != 0 || !line.starts_with("#version")) && !line.trim().is_empty())
        .map(|(i, line)| {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
                _ => Err(err(format!("merges.txt line {}: expected two tokens separated by one space, got {line:?}", i + 1))),
            }
        })
        .collect()
}

/// The CLIP ViT-L/14 BPE of every SD 1.x model, for single-file checkpoints (which carry no
/// tokenizer). Same files as the reference bundle's tokenizer.
pub const CLIP_VOCAB: &str = include_str!("../assets/clip-vit-l-14/vocab.json");
pub const CLIP_MERGES: &str = include_str!("../assets/clip-vit-l-14/merges.txt");

/// The tokenizer settings as transformers reads a repo's `tokenizer/` folder: the special
/// tokens of `special_tokens_map.json` take precedence over those of `tokenizer_config.json`
/// (SD-2.x's map says pad `!` while its config says `<|endoftext|>`; transformers pads with
/// `!`, id 0). Returns the merged config text for [`ClipTokenizer::from_vocab_merges`].
pub fn merged_tokenizer_config(tokenizer_config_json: Option<&str>, special_tokens_map_json: Option<&str>) -> Result<Option<String>> {
    let Some(map) = special_tokens_map_json else {
        return Ok(tokenizer_config_json.map(str::to_owned));
    };
    let map: serde_json::Value = serde_json::from_str(map).map_err(|e| err(format!("special_tokens_map.json is not valid JSON: {e}")))?;
    let mut cfg: serde_json::Value = match tokenizer_config_json {
        Some(t) => serde_json::from_str(t).map_err(|e| err(format!("tokenizer_config.json is not valid JSON: {e}")))?,
        None => serde_json::json!({}),
    };
    if let (Some(m), Some(c)) = (map.as_object(), cfg.as_object_mut()) {
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            if let Some(v) = m.get(key).filter(|v| !v.is_null()) {
                c.insert(key.to_string(), v.clone());
            }
        }
    }
    Ok(Some(cfg.to_string()))
}

impl ClipTokenizer {
    /// SD 1.x's tokenizer (CLIP ViT-L/14 BPE), built into the crate.
    pub fn sd15() -> Result<Self> {
        Self::from_vocab_merges(CLIP_VOCAB, CLIP_MERGES, None)
    }

    /// SD 2.x's tokenizer: the same BPE, padded with `!` (id 0) as stabilityai's repos say
    /// in their special_tokens_map.json (for single-file checkpoints).
    pub fn sd2() -> Result<Self> {
        Self::from_vocab_merges(CLIP_VOCAB, CLIP_MERGES, Some(r#"{"pad_token": "!"}"#))
    }

    /// From the files of a diffusers repo's `tokenizer/` folder: `vocab.json`, `merges.txt`
    /// and (optional) `tokenizer_config.json`, which names the special tokens; the pad token
    /// defaults to `<|endoftext|>` (SD 1.5; some models use `!`).
    pub fn from_vocab_merges(vocab_json: &str, merges_txt: &str, tokenizer_config_json: Option<&str>) -> Result<Self> {
        let special = SpecialTokens::parse(tokenizer_config_json)?;
        let vocab = parse_vocab(vocab_json)?;
        let merges = parse_merges(merges_txt)?;
        let id_of = |token: &str, field: &str| -> Result<u32> {
            vocab.get(token).copied().ok_or_else(|| {
                err(format!("{field} {token:?} (tokenizer_config.json or its default) is not in vocab.json"))
            })
        };
        let bos = id_of(&special.bos, "bos_token")?;
        let eos = id_of(&special.eos, "eos_token")?;
        id_of(&special.unk, "unk_token")?;

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(special.unk.clone())
            .end_of_word_suffix("</w>".into())
            .build()
            .map_err(|e| err(format!("vocab.json / merges.txt: {e}")))?;

        let mut inner = Tokenizer::new(bpe);
        let whitespace = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| err(format!("whitespace normalizer: {e}")))?;
        inner.with_normalizer(Some(NormalizerSequence::new(vec![NFC.into(), whitespace.into(), Lowercase.into()])));
        let split = Split::new(SplitPattern::Regex(CLIP_PATTERN.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(|e| err(format!("pre-tokenizer pattern: {e}")))?;
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()])));
        inner.with_post_processor(Some(
            RobertaProcessing::new((special.eos.clone(), eos), (special.bos.clone(), bos)).trim_offsets(false).add_prefix_space(false),
        ));
        // A literal special token in a prompt maps to its id, as in transformers: also the pad
        // token, so with SD-2.x's pad `!` every `!` of a prompt is id 0 (`!!` too is 0, 0).
        let mut specials = vec![AddedToken::from(special.bos.clone(), true).normalized(false), AddedToken::from(special.eos.clone(), true).normalized(false)];
        if let Some(pad) = special.pad.as_deref().filter(|p| *p != special.bos && *p != special.eos && inner.token_to_id(p).is_some()) {
            specials.push(AddedToken::from(pad.to_string(), true).normalized(false));
        }
        inner.add_special_tokens(&specials);
        Self::finish(inner, special.pad.as_deref(), "tokenizer_config.json")
    }

    /// From a `tokenizer.json` (normalizer, pre-tokenizer, model and post-processor as
    /// written there). The pad token comes from `tokenizer_config.json` when given, else from
    /// the padding section of `tokenizer.json`, else `<|endoftext|>`. Truncation and padding
    /// are always set to [`MAX_LEN`].
    pub fn from_tokenizer_json(tokenizer_json: &str, tokenizer_config_json: Option<&str>) -> Result<Self> {
        let inner: Tokenizer = tokenizer_json.parse().map_err(|e| err(format!("tokenizer.json: {e}")))?;
        let pad = match tokenizer_config_json {
            Some(_) => SpecialTokens::parse(tokenizer_config_json)?.pad,
            None => inner.get_padding().map(|p| p.pad_token.clone()),
        };
        Self::finish(inner, pad.as_deref(), "tokenizer_config.json / tokenizer.json")
    }

    /// Sets truncation and padding and learns the start / end ids from encoding "".
    fn finish(mut inner: Tokenizer, pad: Option<&str>, pad_source: &str) -> Result<Self> {
        let pad = pad.unwrap_or(DEFAULT_EOS);
        let pad_id = inner
            .token_to_id(pad)
            .ok_or_else(|| err(format!("pad_token {pad:?} (from {pad_source} or the default) is not in the vocabulary")))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| err(e.to_string()))?;
        let empty = inner.encode("", true).map_err(|e| err(format!("encoding \"\": {e}")))?;
        let (start_id, end_id) = match empty.get_ids() {
            &[start, end] => (start, end),
            ids => {
                return Err(err(format!(
                    "the post-processor must add one start and one end token (CLIP), but \"\" encodes to {ids:?}"
                )))
            }
        };
        let raw = inner.clone();
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: MAX_LEN,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(format!("truncation: {e}")))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(MAX_LEN),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad.to_owned(),
        }));
        Ok(Self { inner, raw, start_id, end_id, pad_id })
    }

    /// Encodes a prompt to exactly [`MAX_LEN`] ids.
    pub fn encode(&self, prompt: &str) -> Result<Encoded> {
        let enc = self.inner.encode(prompt, true).map_err(|e| err(format!("encoding the prompt: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() != MAX_LEN {
            return Err(err(format!("encoded prompt has {} ids, expected {MAX_LEN}", ids.len())));
        }
        // Truncation moves the cut tokens, in chunks, into `overflowing`; the post-processor and
        // the padding then add start / end / pad tokens to each chunk: count only the prompt's.
        let dropped_tokens = enc
            .get_overflowing()
            .iter()
            .map(|o| {
                o.get_special_tokens_mask().iter().zip(o.get_attention_mask()).filter(|&(&special, &attend)| special == 0 && attend == 1).count()
            })
            .sum();
        Ok(Encoded { ids, dropped_tokens })
    }

    /// The tokens of `text` alone: no start / end token, no truncation, no padding (what
    /// transformers' `tokenizer(text).input_ids[1:-1]` gives; long-prompt weighting tokenises
    /// each weighted run of a prompt this way, see [`crate::prompt`]).
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.raw.encode(text, false).map_err(|e| err(format!("encoding the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// This tokenizer as a `tokenizer.json` (with its padding and truncation), which
    /// [`ClipTokenizer::from_tokenizer_json`] reads back.
    pub fn to_tokenizer_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| err(format!("writing tokenizer.json: {e}")))
    }

    /// The start-of-text id (`<|startoftext|>`, 49406 in SD 1.x).
    pub fn start_id(&self) -> u32 {
        self.start_id
    }

    /// The end-of-text id (`<|endoftext|>`, 49407 in SD 1.x).
    pub fn end_id(&self) -> u32 {
        self.end_id
    }

    /// The pad id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
}
