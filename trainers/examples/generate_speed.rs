//! Greedy generation's speed with the KV cache: the step-speed issue's generation row, beside
//! `scripts/bench/hf_generate.py` (`transformers`' `generate` on the same folder and prompts).
//!
//! ```text
//! cargo run --release -p otpref-trainers --example generate_speed -- \
//!     --model DIR --pairs PAIRS.jsonl --batch 4 --new-tokens 64
//! ```
//!
//! The first `--batch` prompts of a TRL preference file that tokenize (as plain text) to as
//! many tokens as the first one, as one batch; every row generates exactly `--new-tokens`
//! tokens (no end of sequence stops a row, so both programs do the same work). Prints one JSON line: generated
//! tokens per second over the generation alone (the model's loading not counted).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::backend::Flex;
use clap::Parser;
use otpref_trainers::hub::{LoadOptions, ModelFolder};
use otpref_trainers::model::generate_greedy;

#[derive(Parser)]
#[command(about = "Greedy generation's tokens/s with the KV cache")]
struct Args {
    /// The model folder (config.json, safetensors weights, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// TRL preference pairs (JSON lines with a string `prompt`).
    #[arg(long)]
    pairs: PathBuf,
    /// Prompts generated for at once.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match otpref_trainers::run::cli::run_as_trainers_do(|| run(args).map_err(|e| e.to_string())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let folder = ModelFolder::open(&args.model)?;
    let tokenizer = folder.tokenizer()?;
    let all = std::fs::read_to_string(&args.pairs)?
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line)?;
            let prompt = row["prompt"].as_str().ok_or("a string `prompt` per line")?;
            Ok(tokenizer.encode(prompt, true)?)
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    // Prompts of one length: no padding (the padding id would be the unreachable end id).
    let length = all.first().ok_or("no prompts")?.len();
    let prompts: Vec<Vec<u32>> = all
        .into_iter()
        .filter(|p| p.len() == length)
        .take(args.batch)
        .collect();
    let model = folder.load_causal_lm::<Flex>(&LoadOptions::default(), &device)?;
    let started = Instant::now();
    // No token id is u32::MAX: every row runs to `new_tokens`.
    let out = generate_greedy(&model, &prompts, args.new_tokens, u32::MAX, &device);
    let seconds = started.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(Vec::len).sum();
    println!(
        "{}",
        serde_json::json!({
            "program": "otpref generate_greedy",
            "batch": prompts.len(),
            "new_tokens": args.new_tokens,
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_s": tokens as f64 / seconds,
        })
    );
    Ok(())
}
