//! Token ids and chat-template renderings equal what `transformers` produced for the same
//! tokenizer files (`tests/fixtures/hf/tokenizer_cases_*.json`).

mod common;

use common::fixture;
use otpref_trainers::tokenizer::{CharVocabulary, Message, Tokenizer};
use serde_json::Value;

fn cases(name: &str) -> Value {
    let path = fixture(&format!("tokenizer_cases_{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn check(folder: &str, cases_name: &str) {
    let folder_path = fixture(folder);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(folder_path.join("config.json")).unwrap())
            .unwrap();
    let tokenizer = Tokenizer::from_folder(&folder_path, Some(&config)).unwrap();
    let cases = cases(cases_name);
    for case in cases["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&case["ids_with_special_tokens"]),
            "{text:?}"
        );
        assert_eq!(
            tokenizer.encode(text, false).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
        assert_eq!(tokenizer.decode(&ids(&case["ids"]), false).unwrap(), text);
    }
    for case in cases["chats"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let generation = case["add_generation_prompt"].as_bool().unwrap();
        let rendered = tokenizer
            .apply_chat_template(&messages, generation)
            .unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap());
        assert_eq!(
            tokenizer.encode_chat(&messages, generation).unwrap(),
            ids(&case["ids"])
        );
    }
    assert_eq!(
        tokenizer.eos_id() as u64,
        cases["eos_token_id"].as_u64().unwrap()
    );
    // Without a padding token, EOS pads.
    let pad = cases["pad_token_id"]
        .as_u64()
        .unwrap_or(cases["eos_token_id"].as_u64().unwrap());
    assert_eq!(tokenizer.pad_id() as u64, pad);
    assert_eq!(
        tokenizer.vocab_size() as u64,
        cases["vocab_size"].as_u64().unwrap()
    );
}

#[test]
fn chatml_template_from_chat_template_jinja() {
    check("smollm", "chatml");
}

#[test]
fn llama3_template_from_tokenizer_config_with_bos_and_trim() {
    check("llama", "llama3");
}

#[test]
fn llama3_template_from_chat_template_jinja() {
    check("llama-reward", "llama3");
}

#[test]
fn raise_exception_in_a_template_is_an_error_with_its_message() {
    let tokenizer = Tokenizer::from_folder(&fixture("llama"), None).unwrap();
    let messages = [Message::new("assistant", "I speak first")];
    let message = tokenizer
        .apply_chat_template(&messages, false)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("Conversation roles must alternate"),
        "{message}"
    );
}

#[test]
fn character_vocabulary() {
    let tokenizer = Tokenizer::characters(CharVocabulary::new("0123456789+="));
    assert_eq!(
        tokenizer.encode("12+3=", false).unwrap(),
        vec![1, 2, 10, 3, 11]
    );
    assert_eq!(
        (
            tokenizer.eos_id(),
            tokenizer.pad_id(),
            tokenizer.vocab_size()
        ),
        (12, 13, 14)
    );
    assert_eq!(
        tokenizer.decode(&[4, 2, 12, 13], false).unwrap(),
        "42<eos><pad>"
    );
    assert_eq!(tokenizer.decode(&[4, 2, 12, 13], true).unwrap(), "42");
    let message = tokenizer.encode("1x", false).unwrap_err().to_string();
    assert!(message.contains("'x'"), "{message}");
    let message = tokenizer
        .apply_chat_template(&[Message::new("user", "1")], true)
        .unwrap_err()
        .to_string();
    assert!(message.contains("no chat template"), "{message}");
}
