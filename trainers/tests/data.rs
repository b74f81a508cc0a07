//! Preference data: JSON lines read with line-numbered errors, tokenized as TRL tokenizes
//! (conversational pairs checked against `transformers`' chat-template ids), truncated by the
//! stated rule, and collated with the masks the losses read.

mod common;

use common::{fixture, ScratchFolder, B};
use otpref_trainers::data::{
    collate_pairs, read_jsonl, tokenize_dataset, tokenize_pair, Dataset, LengthLimits,
    PreferencePair, Text, TokenizedPair,
};
use otpref_trainers::tokenizer::{Message, Tokenizer};
use serde_json::Value;

fn write(lines: &str, tag: &str) -> (ScratchFolder, std::path::PathBuf) {
    let folder = ScratchFolder::empty(tag);
    std::fs::create_dir_all(&folder.0).unwrap();
    let path = folder.0.join("pairs.jsonl");
    std::fs::write(&path, lines).unwrap();
    (folder, path)
}

fn read_error(lines: &str, tag: &str) -> String {
    let (_folder, path) = write(lines, tag);
    read_jsonl(&path).unwrap_err().to_string()
}

#[test]
fn reads_strings_conversations_margins_and_skips_blank_lines() {
    let (_folder, path) = write(
        r#"{"prompt": "2+2=", "chosen": "4", "rejected": "5", "margin": 1.5, "id": 7}

{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go away"}]}
"#,
        "jsonl-good",
    );
    let data = read_jsonl(&path).unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.lines, vec![1, 3]);
    assert_eq!(data.pairs[0].margin, Some(1.5));
    assert_eq!(data.pairs[0].chosen, Text::Plain("4".into()));
    assert_eq!(
        data.pairs[1].prompt,
        Text::Conversation(vec![Message::new("user", "Hi")])
    );
    assert!(data.locate(1).ends_with("pairs.jsonl line 3"));
}

#[test]
fn a_byte_order_mark_is_skipped_and_only_at_the_start() {
    let line = r#"{"prompt": "2+2=", "chosen": "4", "rejected": "5"}"#;
    let (_folder, path) = write(&format!("\u{feff}{line}\n{line}\n"), "jsonl-bom");
    let data = read_jsonl(&path).unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.pairs[0].prompt, Text::Plain("2+2=".into()));
    // Inside the file a mark is not whitespace JSON accepts: the line is refused.
    let err = read_error(&format!("{line}\n\u{feff}{line}\n"), "jsonl-bom-inside");
    assert!(err.contains("line 2: not valid JSON"), "{err}");
}

#[test]
fn malformed_lines_name_file_line_and_problem() {
    let good = r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#;
    let cases = [
        ("{not json", "line 2: not valid JSON"),
        (
            r#"{"prompt": "a", "chosen": "b"}"#,
            "line 2: missing \"rejected\"",
        ),
        (
            r#"{"chosen": "b", "rejected": "c"}"#,
            "line 2: missing \"prompt\"",
        ),
        (
            r#"{"prompt": 3, "chosen": "b", "rejected": "c"}"#,
            "\"prompt\": must be a string or a list",
        ),
        (
            r#"{"prompt": "a", "chosen": [{"content": "b"}], "rejected": "c"}"#,
            "\"chosen\": message 0 must be an object",
        ),
        (
            r#"{"prompt": "a", "chosen": [], "rejected": "c"}"#,
            "\"chosen\": an empty list",
        ),
        (
            r#"{"prompt": "a", "chosen": "b", "rejected": "c", "margin": "big"}"#,
            "\"margin\" must be a finite number",
        ),
        ("[1, 2]", "line 2: expected a JSON object"),
    ];
    for (i, (bad, expected)) in cases.iter().enumerate() {
        let message = read_error(
            &format!("{good}\n{bad}\n{good}\n"),
            &format!("jsonl-bad-{i}"),
        );
        assert!(
            message.contains("pairs.jsonl") && message.contains(expected),
            "{message}"
        );
    }
    let message = read_error("\n\n", "jsonl-empty");
    assert!(message.contains("holds no preference pairs"), "{message}");
}

fn chatml() -> Tokenizer {
    Tokenizer::from_folder(&fixture("smollm"), None).unwrap()
}

#[test]
fn plain_pairs_get_special_tokens_on_the_prompt_and_eos_on_responses() {
    let tokenizer = Tokenizer::from_folder(&fixture("llama"), None).unwrap();
    let pair = PreferencePair {
        prompt: Text::Plain("What is 12+35?".into()),
        chosen: Text::Plain(" 47".into()),
        rejected: Text::Plain(" 48".into()),
        margin: None,
        chosen_weights: None,
        rejected_weights: None,
    };
    let ids = tokenize_pair(&pair, &tokenizer).unwrap();
    // The Llama-3 style tokenizer adds BOS to the prompt (id 0 in the fixture).
    assert_eq!(
        ids.prompt,
        tokenizer.encode("What is 12+35?", true).unwrap()
    );
    assert_eq!(ids.prompt[0], 0);
    let mut chosen = tokenizer.encode(" 47", false).unwrap();
    chosen.push(tokenizer.eos_id());
    assert_eq!(ids.chosen, chosen);
}

#[test]
fn conversational_pairs_match_transformers_chat_template_ids() {
    for (folder, cases) in [("smollm", "chatml"), ("llama", "llama3")] {
        let tokenizer = Tokenizer::from_folder(&fixture(folder), None).unwrap();
        let path = fixture(&format!("tokenizer_cases_{cases}.json"));
        let cases: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in cases["pairs"].as_array().unwrap() {
            let prompt: Vec<Message> = serde_json::from_value(case["prompt"].clone()).unwrap();
            let response: Vec<Message> = serde_json::from_value(case["response"].clone()).unwrap();
            let pair = PreferencePair {
                prompt: Text::Conversation(prompt),
                chosen: Text::Conversation(response.clone()),
                rejected: Text::Conversation(response),
                margin: None,
                chosen_weights: None,
                rejected_weights: None,
            };
            let ids = tokenize_pair(&pair, &tokenizer).unwrap();
            let expected =
                |key: &str| -> Vec<u32> { serde_json::from_value(case[key].clone()).unwrap() };
            assert_eq!(ids.prompt, expected("prompt_ids"), "{folder}");
            assert_eq!(ids.chosen, expected("response_ids"), "{folder}");
        }
    }
}

#[test]
fn mixing_string_prompt_and_message_response_is_an_error_naming_the_line() {
    let pair = PreferencePair {
        prompt: Text::Plain("Hi".into()),
        chosen: Text::Conversation(vec![Message::new("assistant", "Hello")]),
        rejected: Text::Plain("Bye".into()),
        margin: None,
        chosen_weights: None,
        rejected_weights: None,
    };
    let data = Dataset::from_pairs("train.jsonl", vec![pair]);
    let limits = LengthLimits {
        max_length: 64,
        max_prompt_length: 32,
    };
    let message = tokenize_dataset(&data, &chatml(), limits)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("train.jsonl line 1") && message.contains("both as messages"),
        "{message}"
    );
}

#[test]
fn truncation_keeps_the_prompt_end_and_skips_pairs_that_do_not_fit() {
    let tokenizer = Tokenizer::characters(otpref_trainers::task::vocabulary());
    let pair = |prompt: &str, chosen: &str| PreferencePair {
        prompt: Text::Plain(prompt.into()),
        chosen: Text::Plain(chosen.into()),
        rejected: Text::Plain("1".into()),
        margin: None,
        chosen_weights: None,
        rejected_weights: None,
    };
    let data = Dataset::from_pairs(
        "built-in",
        vec![
            pair("12+34=", "46"),          // 6 + 3 tokens: fits as it is
            pair("1234567+1=", "1234568"), // prompt cut to its last 8 tokens, 8 + 8 = 16
            pair("1+1=", "2222222222222"), // 4 + 14 > 16: skipped
        ],
    );
    let limits = LengthLimits {
        max_length: 16,
        max_prompt_length: 8,
    };
    let (pairs, report) = tokenize_dataset(&data, &tokenizer, limits).unwrap();
    assert_eq!(
        (
            report.kept,
            report.prompts_truncated,
            report.skipped_too_long
        ),
        (2, 1, 1)
    );
    assert_eq!(
        pairs[1].prompt,
        tokenizer.encode("34567+1=", false).unwrap()
    );
    assert!(report
        .to_string()
        .contains("1 skipped as longer than max_length"));
}

/// The data's token weights are laid out as the response mask is: entry t weighs the token at
/// position t + 1, 0 on the prompt and the padding (worked out by hand for two pairs).
#[test]
fn collated_token_weights_align_with_the_response_tokens() {
    let mut pairs = two_pairs();
    pairs[0].chosen_weights = Some(vec![0.5, 1.5]);
    pairs[0].rejected_weights = Some(vec![2.0, 3.0, 4.0]);
    pairs[1].chosen_weights = Some(vec![5.0, 6.0]);
    pairs[1].rejected_weights = Some(vec![7.0]);
    let batch = collate_pairs::<B>(&pairs, 0, &Default::default());
    // Rows of length 5 (prompt 2 + rejected 3), so 4 next-token entries per row.
    let weights: Vec<f32> = batch.token_weights.unwrap().into_data().to_vec().unwrap();
    assert_eq!(
        weights,
        vec![
            0.0, 0.5, 1.5, 0.0, // prompt [1, 2], chosen [3, 9]
            5.0, 6.0, 0.0, 0.0, // prompt [6], chosen [7, 9]
            0.0, 2.0, 3.0, 4.0, // prompt [1, 2], rejected [4, 5, 9]
            7.0, 0.0, 0.0, 0.0, // prompt [6], rejected [9]
        ]
    );
    // A pair without weights: the batch has none.
    let mut mixed = pairs;
    mixed[1].rejected_weights = None;
    assert!(collate_pairs::<B>(&mixed, 0, &Default::default())
        .token_weights
        .is_none());
}

/// Two tokenized pairs of different lengths (prompts [1, 2] and [6]; EOS is 9), with margins
/// and no token weights.
fn two_pairs() -> Vec<TokenizedPair> {
    let pair = |prompt: &[u32], chosen: &[u32], rejected: &[u32], margin| TokenizedPair {
        prompt: prompt.to_vec(),
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
        margin: Some(margin),
        chosen_weights: None,
        rejected_weights: None,
    };
    vec![
        pair(&[1, 2], &[3, 9], &[4, 5, 9], 1.0),
        pair(&[6], &[7, 9], &[9], 0.0),
    ]
}

#[test]
fn collation_stacks_chosen_then_rejected_with_aligned_masks() {
    let pairs = two_pairs();
    let batch = collate_pairs::<B>(&pairs, 0, &Default::default());
    let ids = batch
        .input_ids
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap();
    #[rustfmt::skip]
    assert_eq!(ids, vec![
        1, 2, 3, 9, 0,   // prompt + chosen
        6, 7, 9, 0, 0,
        1, 2, 4, 5, 9,   // prompt + rejected
        6, 9, 0, 0, 0,
    ]);
    let attention = batch.attention_mask.into_data().to_vec::<bool>().unwrap();
    assert_eq!(attention.iter().filter(|&&a| a).count(), 4 + 3 + 5 + 2);
    assert_eq!(batch.num_tokens, 14);
    // Entry t scores token t + 1: ones exactly over the response tokens.
    let response = batch.response_mask.into_data().to_vec::<f32>().unwrap();
    #[rustfmt::skip]
    assert_eq!(response, vec![
        0., 1., 1., 0.,
        1., 1., 0., 0.,
        0., 1., 1., 1.,
        1., 0., 0., 0.,
    ]);
    assert_eq!(
        batch.margins.unwrap().into_data().to_vec::<f32>().unwrap(),
        vec![1.0, 0.0]
    );
}
