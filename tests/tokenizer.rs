//! The CLIP tokenizer against transformers' CLIPTokenizer (golden.json `tokens`, golden
//! tensor `text_ids`), truncation, and errors on bad files.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::tokenizer::{ClipTokenizer, MAX_LEN};

const START: u32 = 49406;
const END: u32 = 49407;

fn tokenizer() -> ClipTokenizer {
    let vocab = common::fixtures::text("model/tokenizer/vocab.json");
    let merges = common::fixtures::text("model/tokenizer/merges.txt");
    let config = common::fixtures::text("model/tokenizer/tokenizer_config.json");
    ClipTokenizer::from_vocab_merges(&vocab, &merges, Some(&config)).unwrap_or_else(|e| panic!("building the tokenizer: {e}"))
}

/// Ok, or a message naming the first mismatching position.
fn compare(prompt: &str, got: &[u32], want: &[u32]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let pos = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    Err(format!(
        "prompt {prompt:?}: first mismatch at position {pos}: got {:?}, expected {:?} (lengths {} / {})\n  got:      {got:?}\n  expected: {want:?}",
        got.get(pos),
        want.get(pos),
        got.len(),
        want.len()
    ))
}

cpu_test!(golden_json_token_cases, || {
    let tok = tokenizer();
    assert_eq!((tok.start_id(), tok.end_id(), tok.pad_id()), (START, END, END));
    let golden: serde_json::Value = serde_json::from_str(&common::fixtures::text("golden.json")).expect("golden.json");
    let cases = golden["tokens"].as_array().expect("golden.json: tokens");
    assert_eq!(cases.len(), 8, "golden.json: expected 8 token cases");
    let mut failures = Vec::new();
    for case in cases {
        let prompt = case["prompt"].as_str().expect("prompt");
        let want: Vec<u32> = case["ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
        let got = tok.encode(prompt).unwrap_or_else(|e| panic!("prompt {prompt:?}: {e}"));
        match compare(prompt, &got.ids, &want) {
            Ok(()) => log!("ok {prompt:?} (dropped {})", got.dropped_tokens),
            Err(m) => failures.push(m),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
});

cpu_test!(tokenizer_json_round_trip, || {
    let from_files = tokenizer();
    let json = from_files.to_tokenizer_json().expect("to_tokenizer_json");
    // The pad token comes from the padding section of tokenizer.json here.
    let from_json = ClipTokenizer::from_tokenizer_json(&json, None).unwrap_or_else(|e| panic!("from_tokenizer_json: {e}"));
    assert_eq!((from_json.start_id(), from_json.end_id(), from_json.pad_id()), (START, END, END));
    let golden: serde_json::Value = serde_json::from_str(&common::fixtures::text("golden.json")).expect("golden.json");
    let mut prompts: Vec<String> = golden["tokens"].as_array().expect("tokens").iter().map(|c| c["prompt"].as_str().expect("prompt").to_owned()).collect();
    prompts.push("a very long prompt ".repeat(40));
    for prompt in &prompts {
        let want = from_files.encode(prompt).expect("encode (files)");
        let got = from_json.encode(prompt).expect("encode (tokenizer.json)");
        compare(prompt, &got.ids, &want.ids).unwrap_or_else(|m| panic!("tokenizer.json: {m}"));
        assert_eq!(got.dropped_tokens, want.dropped_tokens, "prompt {prompt:?}: dropped tokens");
    }
});

cpu_test!(golden_text_ids, || {
    let tok = tokenizer();
    let bytes = common::fixtures::bytes("golden.safetensors");
    let (ids, shape) = common::fixtures::golden(&bytes, "text_ids");
    assert_eq!(shape, vec![3, MAX_LEN], "text_ids shape");
    let golden: serde_json::Value = serde_json::from_str(&common::fixtures::text("golden.json")).expect("golden.json");
    let case = &golden["cases"]["txt2img_ddpm"];
    let prompts = [case["prompt"].as_str().expect("prompt"), case["negative_prompt"].as_str().expect("negative_prompt"), ""];
    let mut failures = Vec::new();
    for (row, prompt) in prompts.iter().enumerate() {
        let want: Vec<u32> = ids[row * MAX_LEN..(row + 1) * MAX_LEN].iter().map(|&v| v as u32).collect();
        let got = tok.encode(prompt).unwrap_or_else(|e| panic!("prompt {prompt:?}: {e}"));
        assert_eq!(got.dropped_tokens, 0, "prompt {prompt:?}");
        if let Err(m) = compare(prompt, &got.ids, &want) {
            failures.push(format!("text_ids row {row}: {m}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
});

cpu_test!(long_prompt_is_truncated, || {
    let tok = tokenizer();
    // "a very long prompt" is 4 tokens; 75 fit between the start and end tokens.
    for (repeats, expected_dropped) in [(18usize, 0usize), (19, 1), (30, 45), (60, 165)] {
        let prompt = "a very long prompt ".repeat(repeats);
        let got = tok.encode(&prompt).unwrap_or_else(|e| panic!("{repeats} repeats: {e}"));
        assert_eq!(got.ids.len(), MAX_LEN, "{repeats} repeats");
        assert_eq!(got.ids[0], START, "{repeats} repeats");
        assert_eq!(got.dropped_tokens, expected_dropped, "{repeats} repeats: dropped tokens");
        if expected_dropped > 0 {
            assert_eq!(got.ids[MAX_LEN - 1], END, "{repeats} repeats: last id must be the end token");
            assert!(!got.ids[1..MAX_LEN - 1].contains(&END), "{repeats} repeats: no padding when truncated");
        }
        // The kept tokens are the prompt's first ones: the 4-token pattern from position 1.
        let pattern = &got.ids[1..5];
        for (i, &id) in got.ids[1..].iter().enumerate().take((4 * repeats).min(MAX_LEN - 2)) {
            assert_eq!(id, pattern[i % 4], "{repeats} repeats: position {}", i + 1);
        }
    }
});

cpu_test!(pad_token_from_config, || {
    let vocab = common::fixtures::text("model/tokenizer/vocab.json");
    let merges = common::fixtures::text("model/tokenizer/merges.txt");
    // Some models pad with "!" (id 0), given as an object with `content`.
    let config = r#"{"pad_token": {"content": "!", "lstrip": false}}"#;
    let tok = ClipTokenizer::from_vocab_merges(&vocab, &merges, Some(config)).expect("tokenizer with ! padding");
    let got = tok.encode("a photo of a cat").expect("encode");
    assert_eq!(&got.ids[..7], &[START, 320, 1125, 539, 320, 2368, END]);
    assert!(got.ids[7..].iter().all(|&id| id == 0), "pad ids: {:?}", &got.ids[7..]);
    // Without a config the pad token is <|endoftext|>.
    let tok = ClipTokenizer::from_vocab_merges(&vocab, &merges, None).expect("tokenizer without config");
    assert_eq!(tok.encode("a photo of a cat").expect("encode"), tokenizer().encode("a photo of a cat").expect("encode"));
});

cpu_test!(bad_files_are_errors, || {
    let vocab = common::fixtures::text("model/tokenizer/vocab.json");
    let merges = common::fixtures::text("model/tokenizer/merges.txt");
    let cases: [(&str, &str, &str, Option<&str>); 5] = [
        ("vocab.json", "{ not json", &merges, None),
        ("vocab.json", r#"{"a": "one"}"#, &merges, None),
        ("merges.txt", &vocab, "#version: 0.2\na b c\n", None),
        ("tokenizer_config.json", &vocab, &merges, Some("[")),
        ("not in the vocabulary", &vocab, &merges, Some(r#"{"pad_token": "<no such token>"}"#)),
    ];
    for (needle, v, m, c) in cases {
        match ClipTokenizer::from_vocab_merges(v, m, c) {
            Ok(_) => panic!("expected an error mentioning {needle:?}"),
            Err(e) => {
                let msg = e.to_string();
                log!("error as expected: {msg}");
                assert!(msg.contains(needle), "error should mention {needle:?}: {msg}");
            }
        }
    }
    match ClipTokenizer::from_tokenizer_json("{ not json", None) {
        Ok(_) => panic!("bad tokenizer.json accepted"),
        Err(e) => assert!(e.to_string().contains("tokenizer.json"), "{e}"),
    }
});
