//! Activation checkpointing and the chunked head give the gradients of the plain backward (to
//! 1e-5): full fine-tuning with untied and tied heads, LoRA adapters with dropout (the
//! recomputation replays the dropout masks), and the reward model; the chunked head's
//! log-probabilities are `transformers`' logits' log-softmax.

mod common;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor};
use common::{fixture, Expected, B};
use otpref_trainers::hub::{LoadOptions, ModelFolder};
use otpref_trainers::model::{next_token_logps, CausalLm, LoraConfig, LoraTarget, RewardModel};

type A = Autodiff<B>;

/// The backend's random stream is global to the process: tests that seed it and draw from it
/// (adapter dropout) take turns.
static RANDOM_STREAM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    RANDOM_STREAM.lock().unwrap_or_else(|e| e.into_inner())
}

fn batch(name: &str) -> (Tensor<A, 2, Int>, Tensor<A, 2, Bool>) {
    let expected = Expected::read(&fixture(name).join("expected.safetensors"));
    let batch = expected.batch("right");
    let device = Default::default();
    (
        Tensor::from_data(batch.ids.into_data(), &device),
        Tensor::from_data(batch.mask.into_data(), &device),
    )
}

/// Every parameter's gradient (zeros where none), in visiting order.
struct Collect<'a> {
    grads: &'a GradientsParams,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor<A> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        let grad = self
            .grads
            .get::<<A as AutodiffBackend>::InnerBackend, D>(param.id);
        self.out.push(match grad {
            Some(g) => g.into_data().to_vec().unwrap(),
            None => vec![0.0; param.shape().num_elements()],
        });
    }
}

fn all_grads<M: Module<A>>(model: &M, grads: &GradientsParams) -> Vec<Vec<f32>> {
    let mut collect = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut collect);
    collect.out
}

fn assert_close(plain: &[Vec<f32>], checkpointed: &[Vec<f32>], what: &str) {
    assert_eq!(plain.len(), checkpointed.len());
    let mut nonzero = 0;
    for (p, c) in plain.iter().zip(checkpointed) {
        let scale = p.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        for (x, y) in p.iter().zip(c) {
            assert!((x - y).abs() <= 1e-5 * scale.max(1.0), "{what}: {x} vs {y}");
        }
        nonzero += p.iter().any(|x| *x != 0.0) as usize;
    }
    assert!(nonzero > 0, "{what}: no gradient at all");
}

/// A DPO-like loss through log-probabilities and hidden states.
fn policy_loss(
    model: &CausalLm<A>,
    ids: Tensor<A, 2, Int>,
    mask: Tensor<A, 2, Bool>,
) -> Tensor<A, 1> {
    let out = model.forward(ids.clone(), mask);
    next_token_logps(out.logits, ids).mean() + out.hidden.powi_scalar(2).mean().mul_scalar(0.1)
}

fn check_policy(model: CausalLm<A>, name: &str, what: &str, seed: u64) {
    let (ids, mask) = batch(name);
    let device = Default::default();
    A::seed(&device, seed);
    let plain = model.backward(policy_loss(&model, ids.clone(), mask.clone()));
    let plain = all_grads(&model, &plain);
    let checkpointed_model = model.clone().with_gradient_checkpointing();
    A::seed(&device, seed);
    let loss = policy_loss(&checkpointed_model, ids, mask);
    let checkpointed = checkpointed_model.backward(loss);
    assert_close(&plain, &all_grads(&checkpointed_model, &checkpointed), what);
}

fn policy(name: &str) -> CausalLm<A> {
    ModelFolder::open(fixture(name))
        .unwrap()
        .load_causal_lm::<A>(&LoadOptions::default(), &Default::default())
        .unwrap()
}

#[test]
fn full_fine_tuning_gradients_match_untied_and_tied() {
    let _turn = take_turn();
    check_policy(policy("llama"), "llama", "llama (untied head)", 1);
    check_policy(policy("smollm"), "smollm", "smollm (tied embeddings)", 2);
}

#[test]
fn lora_gradients_match_with_adapter_dropout() {
    let _turn = take_turn();
    let device = Default::default();
    let mut config = LoraConfig::new(4);
    config.dropout = 0.2;
    config.targets = LoraTarget::ALL.to_vec();
    let model = policy("llama").with_lora(&config, &device);
    // Non-zero B, so that the adapters' gradients flow into A too.
    let model = model.map(&mut NonZeroB);
    check_policy(model, "llama", "llama LoRA with dropout", 4);
}

struct NonZeroB;

impl burn::module::ModuleMapper<A> for NonZeroB {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<A, D>>) -> Param<Tensor<A, D>> {
        let all_zero = param.val().abs().max().into_scalar() == 0.0;
        match all_zero {
            true => param.map(|t| (t.ones_like() * 0.05).require_grad()),
            false => param,
        }
    }
}

#[test]
fn reward_model_gradients_match() {
    let _turn = take_turn();
    let model: RewardModel<A> = ModelFolder::open(fixture("llama-reward"))
        .unwrap()
        .load_reward_model(&LoadOptions::default(), &Default::default())
        .unwrap();
    let (ids, mask) = batch("llama-reward");
    let loss = |m: &RewardModel<A>| {
        m.forward(ids.clone(), mask.clone())
            .rewards
            .powi_scalar(2)
            .mean()
    };
    let plain = all_grads(&model, &model.backward(loss(&model)));
    let checkpointed_model = model.clone().with_gradient_checkpointing();
    let grads = checkpointed_model.backward(loss(&checkpointed_model));
    assert_close(
        &plain,
        &all_grads(&checkpointed_model, &grads),
        "reward model",
    );
}

/// A small built-in run of `program` (DPO: 3 SFT steps then 3 DPO steps).
fn small_run(program: &str, output: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.args(["--output", output.to_str().unwrap()]);
    command.args([
        "--builtin-hidden",
        "16",
        "--builtin-layers",
        "2",
        "--builtin-train-pairs",
        "32",
        "--builtin-eval-pairs",
        "8",
        "--batch-size",
        "4",
        "--grad-accum",
        "2",
        "--steps",
        "3",
        "--eval-every",
        "0",
    ]);
    if program.ends_with("dpo_trainer") {
        command.args([
            "--sft-steps",
            "3",
            "--eval-prompts",
            "2",
            "--max-new-tokens",
            "4",
        ]);
    }
    command
}

#[test]
fn both_trainers_train_the_same_model_with_gradient_checkpointing() {
    for program in [
        env!("CARGO_BIN_EXE_dpo_trainer"),
        env!("CARGO_BIN_EXE_reward_trainer"),
    ] {
        let plain = common::ScratchFolder::empty("ckpt-plain");
        common::run_ok(&mut small_run(program, &plain.0));
        let checkpointed = common::ScratchFolder::empty("ckpt-on");
        common::run_ok(small_run(program, &checkpointed.0).arg("--gradient-checkpointing"));
        let read = |dir: &std::path::Path| Expected::read(&dir.join("model/model.safetensors"));
        let (a, b) = (read(&plain.0), read(&checkpointed.0));
        assert_eq!(a.names(), b.names());
        for name in a.names() {
            let (x, y) = (a.f32(&name).0, b.f32(&name).0);
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-5, "{program} {name}: {p} vs {q}");
            }
        }
    }
}

/// `log_softmax(logits)[next token]` on the host, from `transformers`' logits.
fn reference_logps(name: &str) -> (Vec<f32>, Vec<Vec<bool>>, usize) {
    let expected = Expected::read(&fixture(name).join("expected.safetensors"));
    let (logits, shape) = expected.f32("logits_right");
    let (ids, _) = expected.i64("input_ids_right");
    let [batch, len, vocab] = [shape[0], shape[1], shape[2]];
    let mut out = Vec::new();
    for b in 0..batch {
        for t in 0..len - 1 {
            let row = &logits[(b * len + t) * vocab..(b * len + t + 1) * vocab];
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|x| ((x - max) as f64).exp()).sum();
            let target = ids[b * len + t + 1] as usize;
            out.push(row[target] - max - sum.ln() as f32);
        }
    }
    (out, expected.batch("right").rows, len)
}

#[test]
fn chunked_log_probabilities_are_transformers_log_softmax() {
    for name in ["llama", "smollm"] {
        let (expected, rows, len) = reference_logps(name);
        let model = ModelFolder::open(fixture(name))
            .unwrap()
            .load_causal_lm::<B>(&LoadOptions::default(), &Default::default())
            .unwrap()
            .with_head_chunk_rows(5);
        let batch = Expected::read(&fixture(name).join("expected.safetensors")).batch("right");
        let logps: Vec<f32> = model
            .forward_logps(batch.ids, batch.mask)
            .logps
            .into_data()
            .to_vec()
            .unwrap();
        for (b, row) in rows.iter().enumerate() {
            for t in 0..len - 1 {
                if row[t + 1] {
                    let (x, y) = (logps[b * (len - 1) + t], expected[b * (len - 1) + t]);
                    assert!((x - y).abs() < 1e-4, "{name} [{b}, {t}]: {x} vs {y}");
                }
            }
        }
    }
}

/// The same loss through the chunked head (`forward_logps`, several chunks) and through the
/// full logits (`forward` + `next_token_logps`), with the hidden state used directly too.
fn check_chunked_head(model: CausalLm<A>, under_test: CausalLm<A>, name: &str, what: &str) {
    let (ids, mask) = batch(name);
    let out = model.forward(ids.clone(), mask.clone());
    let plain_loss = next_token_logps(out.logits, ids.clone()).mean()
        + out.hidden.powi_scalar(2).mean().mul_scalar(0.1);
    let plain = all_grads(
        &model,
        &GradientsParams::from_grads(plain_loss.backward(), &model),
    );
    let chunked_model = under_test.with_head_chunk_rows(7);
    let out = chunked_model.forward_logps(ids, mask);
    let loss = out.logps.mean() + out.hidden.powi_scalar(2).mean().mul_scalar(0.1);
    let chunked = chunked_model.backward(loss);
    assert_close(&plain, &all_grads(&chunked_model, &chunked), what);
}

#[test]
fn chunked_head_gradients_match_the_full_logits() {
    let _turn = take_turn();
    let device = Default::default();
    let (llama, smollm) = (policy("llama"), policy("smollm"));
    check_chunked_head(
        llama.clone(),
        llama.clone(),
        "llama",
        "chunked head, untied",
    );
    check_chunked_head(
        smollm.clone(),
        smollm.clone(),
        "smollm",
        "chunked head, tied",
    );
    let lora = smollm
        .with_lora(&LoraConfig::new(2), &device)
        .map(&mut NonZeroB);
    check_chunked_head(lora.clone(), lora, "smollm", "chunked head, LoRA");
    let checkpointed = llama.clone().with_gradient_checkpointing();
    check_chunked_head(
        llama,
        checkpointed,
        "llama",
        "chunked head and checkpointed layers",
    );
}

/// Every other position of `ids` `[batch, len]`, as the `[batch, len - 1]` mask of
/// log-probabilities a loss reads (a response mask with gaps).
fn every_other_position(ids: &Tensor<A, 2, Int>) -> Tensor<A, 2> {
    let [batch, len] = ids.dims();
    let values: Vec<f32> = (0..batch * (len - 1))
        .map(|i| ((i % (len - 1)) % 2) as f32)
        .collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(values, [batch, len - 1]),
        &Default::default(),
    )
}

/// The head over the positions a loss reads (`forward_logps_where`) gives the full logits'
/// log-probabilities there and zero elsewhere, and the same gradients as the full logits
/// under that loss: one chunk, several chunks, tied and untied heads.
#[test]
fn head_over_the_needed_positions_matches_the_full_logits() {
    let _turn = take_turn();
    for (name, chunk_rows) in [("llama", None), ("llama", Some(3)), ("smollm", Some(4))] {
        let what = format!("{name}, chunks of {chunk_rows:?} rows");
        let model = policy(name);
        let (ids, mask) = batch(name);
        let needed = every_other_position(&ids);
        let loss_of = |logps: Tensor<A, 2>, hidden: Tensor<A, 3>| {
            (logps * needed.clone()).sum() + hidden.powi_scalar(2).mean().mul_scalar(0.1)
        };
        let out = model.forward(ids.clone(), mask.clone());
        let full = next_token_logps(out.logits, ids.clone());
        let plain_loss = loss_of(full.clone(), out.hidden);
        let plain = GradientsParams::from_grads(plain_loss.backward(), &model);
        let plain = all_grads(&model, &plain);
        let under_test = match chunk_rows {
            Some(rows) => model.clone().with_head_chunk_rows(rows),
            None => model.clone(),
        };
        let out = under_test.forward_logps_where(ids, mask, needed.clone());
        let selected: Vec<f32> = out.logps.clone().into_data().to_vec().unwrap();
        let full: Vec<f32> = full.into_data().to_vec().unwrap();
        let keep: Vec<f32> = needed.clone().into_data().to_vec().unwrap();
        for ((x, y), k) in selected.iter().zip(&full).zip(&keep) {
            let expected = if *k == 0.0 { 0.0 } else { *y };
            assert!((x - expected).abs() <= 1e-5, "{what}: {x} vs {expected}");
        }
        let grads = under_test.backward(loss_of(out.logps, out.hidden));
        assert_close(&plain, &all_grads(&under_test, &grads), &what);
    }
}
