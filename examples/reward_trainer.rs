//! A complete reward-model trainer on the built-in arithmetic preference data: Bradley-Terry
//! with APLOT's adaptive margins (default), a constant margin, data margins, or none.
//!
//! CPU:  `cargo run --release --example reward_trainer`
//! CUDA: `cargo run --release --features cuda --example reward_trainer -- --cuda`
//! Options: `--margin aplot|hard|point|bt`, `--steps N`, `--batch N`, `--lr LR`, `--seed S`,
//! `--flip P` (flip a fraction P of the training labels, to test robustness to noise).
//!
//! The reward model is the tiny causal transformer of the DPO trainer with a scalar head that
//! reads the hidden state of the final (EOS) token; that state is also APLOT's pooled
//! representation.

#[path = "common/tiny_lm.rs"]
mod tiny_lm;

use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use otpref::aplot::hard_margins;
use otpref::{aplot_margins, bt_margin_loss, AplotConfig, BtLossConfig, OtBackend};
use tiny_lm::{arithmetic_pairs, encode, Pair, Rng, TinyLm, EOS};

#[derive(Module, Debug)]
struct RewardModel<B: Backend> {
    backbone: TinyLm<B>,
    head: Linear<B>,
}

impl<B: Backend> RewardModel<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            backbone: TinyLm::new(64, 2, device),
            head: LinearConfig::new(64, 1).init(device),
        }
    }

    /// Rewards `[batch]` and pooled representations `[batch, d_model]` (at the EOS token).
    fn forward(&self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 1>, Tensor<B, 2>) {
        let eos = tokens.clone().equal_elem(EOS).float().unsqueeze_dim::<3>(2);
        let hidden = self.backbone.forward(tokens).hidden;
        let pooled = (hidden * eos).sum_dim(1).squeeze_dim::<2>(1);
        let reward = self.head.forward(pooled.clone()).squeeze_dim::<1>(1);
        (reward, pooled)
    }
}

struct Args {
    margin: String,
    steps: usize,
    batch: usize,
    lr: f64,
    seed: u64,
    flip: f64,
    cuda: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        margin: "aplot".into(),
        steps: 400,
        batch: 32,
        lr: 1e-3,
        seed: 7,
        flip: 0.0,
        cuda: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--margin" => args.margin = value(),
            "--steps" => args.steps = value().parse().expect("--steps N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--lr" => args.lr = value().parse().expect("--lr LR"),
            "--seed" => args.seed = value().parse().expect("--seed S"),
            "--flip" => args.flip = value().parse().expect("--flip P"),
            "--cuda" => args.cuda = true,
            other => panic!("unknown option {other}; see the header of examples/reward_trainer.rs"),
        }
    }
    args
}

fn encode_pairs<B: Backend>(
    pairs: &[Pair],
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let len = pairs
        .iter()
        .map(|p| p.prompt.len() + p.chosen.len().max(p.rejected.len()) + 1)
        .max()
        .unwrap();
    let prompts: Vec<&[i64]> = pairs.iter().map(|p| p.prompt.as_slice()).collect();
    let chosen: Vec<&[i64]> = pairs.iter().map(|p| p.chosen.as_slice()).collect();
    let rejected: Vec<&[i64]> = pairs.iter().map(|p| p.rejected.as_slice()).collect();
    (
        encode::<B>(&prompts, &chosen, len, device).0,
        encode::<B>(&prompts, &rejected, len, device).0,
    )
}

/// PointMargin's data margin: how far the wrong answer is from the right one, squashed to
/// [0, 1) (the arithmetic stand-in for a rating difference).
fn point_margins<B: Backend>(pairs: &[Pair], device: &B::Device) -> Tensor<B, 1> {
    let value = |d: &[i64]| d.iter().fold(0i64, |n, x| 10 * n + x) as f32;
    let margins: Vec<f32> = pairs
        .iter()
        .map(|p| {
            let gap = (value(&p.chosen) - value(&p.rejected)).abs();
            gap / (gap + 5.0)
        })
        .collect();
    Tensor::from_data(TensorData::new(margins, [pairs.len()]), device)
}

fn accuracy<B: Backend>(model: &RewardModel<B>, pairs: &[Pair], device: &B::Device) -> f32 {
    let (chosen, rejected) = encode_pairs::<B>(pairs, device);
    let (r_c, _) = model.forward(chosen);
    let (r_r, _) = model.forward(rejected);
    let wins = (r_c - r_r).greater_elem(0.0).float().mean();
    wins.into_data().to_vec::<f32>().unwrap()[0]
}

fn train<B: AutodiffBackend + OtBackend>(args: &Args, device: &B::Device) {
    B::seed(device, args.seed);
    let mut data = arithmetic_pairs(8192, args.seed);
    let held_out = arithmetic_pairs(512, args.seed + 1);
    let mut rng = Rng(args.seed ^ 0xF11F);
    let flipped = data
        .iter_mut()
        .filter(|_| (rng.below(1_000_000) as f64) < args.flip * 1e6)
        .map(|p| std::mem::swap(&mut p.chosen, &mut p.rejected))
        .count();
    let mut model = RewardModel::<B>::new(device);
    let mut optimizer = AdamWConfig::new().init::<B, RewardModel<B>>();
    println!(
        "reward model, {} margins: {} steps, batch {}, {flipped} of {} training labels flipped",
        args.margin,
        args.steps,
        args.batch,
        data.len()
    );
    for step in 0..args.steps {
        let start = (step * args.batch) % (data.len() - args.batch);
        let pairs = &data[start..start + args.batch];
        let (chosen, rejected) = encode_pairs::<B>(pairs, device);
        let (r_c, h_c) = model.forward(chosen);
        let (r_r, h_r) = model.forward(rejected);
        let margin = match args.margin.as_str() {
            "bt" => None,
            "hard" => Some(hard_margins::<B>(args.batch, 0.5, device)),
            "point" => Some(point_margins::<B>(pairs, device)),
            "aplot" => Some(
                aplot_margins(h_c, h_r, r_c.clone(), r_r.clone(), &AplotConfig::new())
                    .expect("APLOT margins"),
            ),
            other => panic!("unknown margin {other}: aplot, hard, point, bt"),
        };
        let out = bt_margin_loss(r_c, r_r, margin, &BtLossConfig::new()).expect("BT loss");
        if step % 50 == 0 || step + 1 == args.steps {
            println!(
                "  step {step:>4}: loss {:.4}  batch accuracy {:.3}",
                out.loss.clone().into_scalar(),
                out.accuracy.clone().into_scalar()
            );
        }
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optimizer.step(args.lr, model, grads);
    }
    let held_out_accuracy = accuracy(&model.valid(), &held_out, device);
    println!("held-out accuracy (clean labels): {held_out_accuracy:.3}");
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
