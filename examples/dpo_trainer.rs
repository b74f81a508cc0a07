//! A complete DPO trainer on the built-in arithmetic preference data, with every
//! token-weighting scheme of otpref (OTPO by default).
//!
//! CPU:  `cargo run --release --example dpo_trainer`
//! CUDA: `cargo run --release --features cuda --example dpo_trainer -- --cuda`
//! Options: `--method dpo|otpo|simpo|sampo|lddpo|uniform|similarity`, `--steps N`,
//! `--sft-steps N`, `--batch N`, `--beta B`, `--lr LR`, `--seed S`.
//!
//! Pipeline: a tiny causal transformer is first fine-tuned on the chosen answers (SFT), frozen
//! as the reference, then trained with token-weighted DPO. It reports the loss, the implicit
//! reward accuracy and margins, held-out preference accuracy before and after, and how much
//! of each step the token weights cost.

#[path = "common/tiny_lm.rs"]
mod tiny_lm;

use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use otpref::{
    token_weights, weighted_dpo_loss, DpoInputs, DpoLossConfig, DpoLossType, OtBackend, OtpoConfig,
    ResponseTokens, TokenWeighting, WeightBudget,
};
use tiny_lm::{arithmetic_pairs, encode, next_token_logps, Pair, TinyLm};

struct Args {
    method: String,
    steps: usize,
    sft_steps: usize,
    batch: usize,
    beta: f64,
    lr: f64,
    seed: u64,
    cuda: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        method: "otpo".into(),
        steps: 300,
        sft_steps: 300,
        batch: 32,
        beta: 0.1,
        lr: 1e-3,
        seed: 42,
        cuda: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--method" => args.method = value(),
            "--steps" => args.steps = value().parse().expect("--steps N"),
            "--sft-steps" => args.sft_steps = value().parse().expect("--sft-steps N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--beta" => args.beta = value().parse().expect("--beta B"),
            "--lr" => args.lr = value().parse().expect("--lr LR"),
            "--seed" => args.seed = value().parse().expect("--seed S"),
            "--cuda" => args.cuda = true,
            other => panic!("unknown option {other}; see the header of examples/dpo_trainer.rs"),
        }
    }
    args
}

/// The weighting scheme and the loss shape that go with a method name.
fn method(name: &str, step: usize) -> (TokenWeighting, DpoLossType) {
    let sigmoid = DpoLossType::Sigmoid;
    match name {
        "dpo" => (TokenWeighting::Dpo, sigmoid),
        "otpo" => (TokenWeighting::Otpo(OtpoConfig::new()), sigmoid),
        "simpo" => (TokenWeighting::SimPo, DpoLossType::SimPo { gamma: 0.5 }),
        "sampo" => (TokenWeighting::SamPo { seed: step as u64 }, sigmoid),
        "lddpo" => (TokenWeighting::LdDpo { alpha: 0.5 }, sigmoid),
        "uniform" => (
            TokenWeighting::Uniform {
                budget: WeightBudget::Min,
            },
            sigmoid,
        ),
        "similarity" => (
            TokenWeighting::Similarity {
                budget: WeightBudget::Min,
            },
            sigmoid,
        ),
        other => {
            panic!("unknown method {other}: dpo, otpo, simpo, sampo, lddpo, uniform, similarity")
        }
    }
}

fn batch_of(pairs: &[Pair], step: usize, size: usize) -> &[Pair] {
    let start = (step * size) % (pairs.len() - size);
    &pairs[start..start + size]
}

fn sequence_len(pairs: &[Pair]) -> usize {
    pairs
        .iter()
        .map(|p| p.prompt.len() + p.chosen.len().max(p.rejected.len()) + 1)
        .max()
        .unwrap()
}

/// Held-out preference accuracy: how often the policy's log-ratio to the reference is higher
/// for the right answer than for the wrong one.
fn preference_accuracy<B: AutodiffBackend>(
    policy: &TinyLm<B::InnerBackend>,
    reference: &TinyLm<B::InnerBackend>,
    pairs: &[Pair],
    device: &B::Device,
) -> f64 {
    let len = sequence_len(pairs);
    let prompts: Vec<&[i64]> = pairs.iter().map(|p| p.prompt.as_slice()).collect();
    let score = |completions: Vec<&[i64]>| {
        let (tokens, mask) = encode::<B::InnerBackend>(&prompts, &completions, len, device);
        let logps = |model: &TinyLm<B::InnerBackend>| {
            let out = model.forward(tokens.clone());
            (next_token_logps(out.logits, tokens.clone()) * mask.clone()).sum_dim(1)
        };
        logps(policy) - logps(reference)
    };
    let chosen = score(pairs.iter().map(|p| p.chosen.as_slice()).collect());
    let rejected = score(pairs.iter().map(|p| p.rejected.as_slice()).collect());
    let wins = (chosen - rejected).greater_elem(0.0).float().mean();
    wins.into_scalar().to_string().parse().unwrap()
}

fn train<B: AutodiffBackend + OtBackend>(args: &Args, device: &B::Device) {
    B::seed(device, args.seed);
    let data = arithmetic_pairs(8192, args.seed);
    let held_out = arithmetic_pairs(512, args.seed + 1);
    let mut policy = TinyLm::<B>::new(64, 2, device);
    let mut optimizer = AdamWConfig::new().init::<B, TinyLm<B>>();

    println!(
        "SFT on the chosen answers: {} steps, batch {}",
        args.sft_steps, args.batch
    );
    for step in 0..args.sft_steps {
        let pairs = batch_of(&data, step, args.batch);
        let len = sequence_len(pairs);
        let prompts: Vec<&[i64]> = pairs.iter().map(|p| p.prompt.as_slice()).collect();
        let answers: Vec<&[i64]> = pairs.iter().map(|p| p.chosen.as_slice()).collect();
        let (tokens, mask) = encode::<B>(&prompts, &answers, len, device);
        let out = policy.forward(tokens.clone());
        let nll = (next_token_logps(out.logits, tokens) * mask.clone())
            .sum()
            .neg()
            / mask.sum();
        if step % 100 == 0 || step + 1 == args.sft_steps {
            println!(
                "  sft step {step:>4}: nll/token {:.4}",
                nll.clone().into_scalar()
            );
        }
        let grads = GradientsParams::from_grads(nll.backward(), &policy);
        policy = optimizer.step(args.lr, policy, grads);
    }

    let reference = policy.valid();
    let before = preference_accuracy::<B>(&policy.valid(), &reference, &held_out, device);
    println!(
        "DPO with {} weights: {} steps, batch {}, beta {}",
        args.method, args.steps, args.batch, args.beta
    );
    let mut optimizer = AdamWConfig::new().init::<B, TinyLm<B>>();
    let (mut step_time, mut weight_time) = (Duration::ZERO, Duration::ZERO);
    for step in 0..args.steps {
        let started = Instant::now();
        let pairs = batch_of(&data, args.sft_steps + step, args.batch);
        let (weighting, loss_type) = method(&args.method, step);
        let len = sequence_len(pairs);
        let prompts: Vec<&[i64]> = pairs.iter().map(|p| p.prompt.as_slice()).collect();
        let chosen: Vec<&[i64]> = pairs.iter().map(|p| p.chosen.as_slice()).collect();
        let rejected: Vec<&[i64]> = pairs.iter().map(|p| p.rejected.as_slice()).collect();
        let (chosen_tokens, chosen_mask) = encode::<B>(&prompts, &chosen, len, device);
        let (rejected_tokens, rejected_mask) = encode::<B>(&prompts, &rejected, len, device);
        let tokens = Tensor::cat(vec![chosen_tokens, rejected_tokens], 0);

        let out = policy.forward(tokens.clone());
        let logps = next_token_logps(out.logits, tokens.clone());
        let reference_logps = {
            let out = reference.forward(tokens.clone().inner());
            Tensor::<B, 2>::from_inner(next_token_logps(out.logits, tokens.inner()))
        };
        let (b, n) = (args.batch, len - 1);
        // The hidden state at position t is the one that predicts token t + 1.
        let hidden = out.hidden.slice([0..2 * b, 0..n]).detach();
        let weight_start = Instant::now();
        let weights = token_weights(
            &weighting,
            &ResponseTokens {
                chosen_mask,
                rejected_mask,
                chosen_hidden: Some(hidden.clone().narrow(0, 0, b)),
                rejected_hidden: Some(hidden.narrow(0, b, b)),
            },
        )
        .expect("token weights");
        weight_time += weight_start.elapsed();

        let reference = match loss_type {
            DpoLossType::SimPo { .. } => None,
            _ => Some((
                reference_logps.clone().narrow(0, 0, b),
                reference_logps.narrow(0, b, b),
            )),
        };
        let inputs = DpoInputs {
            policy_chosen: logps.clone().narrow(0, 0, b),
            policy_rejected: logps.narrow(0, b, b),
            reference,
        };
        let config = DpoLossConfig::new()
            .with_beta(if args.method == "simpo" {
                2.0
            } else {
                args.beta
            })
            .with_loss_type(loss_type);
        let out = weighted_dpo_loss(&inputs, &weights, &config).expect("dpo loss");
        let loss_value: f64 = out.loss.clone().into_scalar().to_string().parse().unwrap();
        let grads = GradientsParams::from_grads(out.loss.backward(), &policy);
        policy = optimizer.step(args.lr * 0.5, policy, grads);
        step_time += started.elapsed();

        if step % 50 == 0 || step + 1 == args.steps {
            let accuracy = out.accuracy.into_scalar();
            let margin = out.reward_margins.mean().into_scalar();
            println!(
                "  dpo step {step:>4}: loss {loss_value:.4}  reward accuracy {accuracy:.3}  \
                 margin {margin:.4}  {:.1} ms/step",
                step_time.as_secs_f64() * 1e3 / (step + 1) as f64
            );
        }
    }
    let after = preference_accuracy::<B>(&policy.valid(), &reference, &held_out, device);
    println!("held-out preference accuracy: {before:.3} before DPO, {after:.3} after");
    println!(
        "token weights ({}): {:.2} ms/step, {:.1}% of the training step",
        args.method,
        weight_time.as_secs_f64() * 1e3 / args.steps.max(1) as f64,
        100.0 * weight_time.as_secs_f64() / step_time.as_secs_f64().max(1e-9)
    );
}

fn main() {
    let args = parse_args();
    if args.cuda {
        #[cfg(feature = "cuda")]
        return train::<burn::backend::Autodiff<burn::backend::Cuda>>(&args, &Default::default());
        #[cfg(not(feature = "cuda"))]
        panic!("rebuild with `--features cuda` to train on the GPU");
    }
    train::<burn::backend::Autodiff<burn::backend::Flex>>(&args, &Default::default());
}
