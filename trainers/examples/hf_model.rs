//! Load a Hugging Face model folder, show what it generates, and optionally save it again.
//!
//! ```text
//! cargo run --release -p otpref-trainers --example hf_model -- --model DIR --prompt "2+2="
//! cargo run --release -p otpref-trainers --example hf_model -- --model DIR --chat "Hi!" --save OUT
//! ```
//!
//! A smoke test for a checkpoint before training on it: the architecture read from
//! `config.json`, the prompt's token ids, a greedy continuation, and (with `--save`) the folder
//! written back in Hugging Face's format.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::backend::Flex;
use clap::Parser;
use otpref_trainers::hub::{LoadOptions, ModelFolder, SaveOptions};
use otpref_trainers::model::generate_greedy;
use otpref_trainers::tokenizer::Message;

#[derive(Parser)]
#[command(about = "Load a Hugging Face model folder, generate from it, save it again")]
struct Args {
    /// The model folder (config.json, safetensors weights, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// A plain-text prompt, used as it is.
    #[arg(long, conflicts_with = "chat")]
    prompt: Option<String>,
    /// A user message, rendered with the model's chat template.
    #[arg(long)]
    chat: Option<String>,
    /// How many tokens to generate greedily.
    #[arg(long, default_value_t = 32)]
    generate: usize,
    /// Save the loaded model to this folder (Hugging Face format).
    #[arg(long)]
    save: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> otpref_trainers::Result<()> {
    let device = Default::default();
    let folder = ModelFolder::open(&args.model)?;
    let tokenizer = folder.tokenizer()?;
    println!("{:#?}", folder.config());
    let prompt = match (&args.prompt, &args.chat) {
        (_, Some(chat)) => tokenizer.encode_chat(&[Message::new("user", chat.clone())], true)?,
        (Some(prompt), None) => tokenizer.encode(prompt, true)?,
        (None, None) => tokenizer.encode("", true)?,
    };
    println!("prompt ids: {prompt:?}");
    if folder.is_reward_model() {
        let model = folder.load_reward_model::<Flex>(&LoadOptions::default(), &device)?;
        let (ids, mask) = otpref_trainers::model::left_padded::<Flex>(&[prompt], 0, &device);
        let reward = model.forward(ids, mask).rewards.into_scalar();
        println!("reward: {reward}");
        if let Some(out) = &args.save {
            folder.save_reward_model(&model, out, &SaveOptions::default())?;
        }
    } else {
        let model = folder.load_causal_lm::<Flex>(&LoadOptions::default(), &device)?;
        let answer = generate_greedy(
            &model,
            &[prompt],
            args.generate,
            tokenizer.eos_id(),
            &device,
        );
        println!("generated: {:?}", tokenizer.decode(&answer[0], false)?);
        if let Some(out) = &args.save {
            folder.save_causal_lm(&model, out, &SaveOptions::default())?;
        }
    }
    if let Some(out) = &args.save {
        println!("saved to {}", out.display());
    }
    Ok(())
}
