//! What the DPO program evaluates: held-out pairs (policy against reference, ties counted
//! apart), greedy generations scored on the built-in task, and the token weights of a few
//! pairs for `weights.html`.

use burn::tensor::Tensor;
use otpref::OtBackend;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};

use crate::data::{collate_pairs, Text, TokenizedPair};
use crate::error::Result;
use crate::methods::{pair_weights, weighted_loss, DpoObjective};
use crate::model::{generate_greedy, CausalLm};
use crate::task::Problem;
use crate::tokenizer::Tokenizer;
use crate::training::{scalar, MetricsLog};

/// How the policy and the reference compare on held-out data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeldOut {
    /// Pairs whose chosen implicit reward is higher.
    pub wins: usize,
    /// Pairs whose implicit rewards are equal (policy = reference gives only ties).
    pub ties: usize,
    /// Pairs whose rejected implicit reward is higher.
    pub losses: usize,
    /// Mean DPO loss.
    pub loss: f64,
    /// Mean reward margin.
    pub margin: f64,
}

/// Greedy generations on held-out prompts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Generations {
    /// Share of prompts answered correctly (built-in task only).
    pub success_rate: Option<f64>,
    /// Mean generated length in tokens.
    pub mean_length: f64,
    /// A few (prompt, generation) examples.
    pub examples: Vec<(String, String)>,
}

/// The method's token weights on the first few held-out pairs, for `weights.html`.
pub(super) fn weighted_examples<B: burn::tensor::backend::Backend + OtBackend>(
    objective: &DpoObjective,
    policy: &CausalLm<B>,
    pairs: &[TokenizedPair],
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<Vec<super::report::WeightedPair>> {
    let pairs = &pairs[..pairs.len().min(6)];
    let batch = collate_pairs::<B>(pairs, tokenizer.pad_id(), device);
    let [rows, len] = batch.input_ids.dims();
    let out = policy.forward_logps(batch.input_ids.clone(), batch.attention_mask.clone());
    let hidden = objective
        .method
        .needs_hidden_states()
        .then(|| out.hidden.slice([0..rows, 0..len - 1]));
    let weights = pair_weights(
        objective,
        0,
        hidden,
        Some(out.logps),
        batch.token_weights,
        batch.response_mask,
    )?;
    let host = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let (chosen, rejected) = (host(weights.chosen), host(weights.rejected));
    let width = len - 1;
    let mut examples = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        // Response token k sits at position prompt + k; its weight at the position before it.
        let tokens = |ids: &[u32], weights: &[f32]| -> Result<Vec<(String, f32)>> {
            ids.iter()
                .enumerate()
                .map(|(k, &id)| {
                    let weight = (pair.prompt.len() + k)
                        .checked_sub(1)
                        .map_or(0.0, |at| weights[i * width + at]);
                    Ok((tokenizer.decode(&[id], false)?, weight))
                })
                .collect()
        };
        examples.push(super::report::WeightedPair {
            prompt: tokenizer.decode(&pair.prompt, false)?,
            chosen: tokens(&pair.chosen, &chosen)?,
            rejected: tokens(&pair.rejected, &rejected)?,
        });
    }
    Ok(examples)
}

/// Held-out implicit-reward comparison of `policy` against `reference`, ties counted apart.
pub(super) fn held_out<B>(
    objective: &DpoObjective,
    batch_size: usize,
    policy: &CausalLm<B>,
    reference: &CausalLm<B>,
    pairs: &[TokenizedPair],
    pad: u32,
    device: &B::Device,
) -> Result<HeldOut>
where
    B: burn::tensor::backend::Backend + OtBackend,
{
    let mut result = HeldOut::default();
    let (mut loss_sum, mut margin_sum) = (0.0, 0.0);
    for chunk in pairs.chunks(batch_size) {
        let batch = collate_pairs::<B>(chunk, pad, device);
        let b = batch.pairs;
        let [rows, len] = batch.input_ids.dims();
        let mask = batch.response_mask;
        let logps_of = |model: &CausalLm<B>| {
            let (ids, attention) = (batch.input_ids.clone(), batch.attention_mask.clone());
            model.forward_logps_where(ids, attention, mask.clone())
        };
        let out = logps_of(policy);
        let logps = out.logps;
        let reference_logps = objective
            .method
            .uses_reference()
            .then(|| logps_of(reference).logps);
        let hidden = objective
            .method
            .needs_hidden_states()
            .then(|| out.hidden.slice([0..rows, 0..len - 1]));
        let given = batch.token_weights;
        let (out, _, _) = weighted_loss(objective, 0, logps, reference_logps, hidden, given, mask)?;
        loss_sum += scalar(out.loss) * b as f64;
        let margins = out
            .reward_margins
            .into_data()
            .to_vec::<f32>()
            .expect("f32 margins");
        for margin in margins {
            margin_sum += margin as f64;
            match margin.partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => result.wins += 1,
                Some(std::cmp::Ordering::Less) => result.losses += 1,
                _ => result.ties += 1,
            }
        }
    }
    result.loss = loss_sum / pairs.len() as f64;
    result.margin = margin_sum / pairs.len() as f64;
    Ok(result)
}

/// Writes the held-out record and returns its log line.
pub(super) fn log_held_out(metrics: &mut MetricsLog, step: usize, held_out: &HeldOut) -> String {
    let total = (held_out.wins + held_out.ties + held_out.losses).max(1) as f64;
    let mut record = Map::new();
    record.insert("step".into(), json!(step));
    record.insert("eval/loss".into(), json!(held_out.loss));
    record.insert(
        "eval/rewards/accuracies".into(),
        json!(held_out.wins as f64 / total),
    );
    record.insert(
        "eval/rewards/ties".into(),
        json!(held_out.ties as f64 / total),
    );
    record.insert("eval/rewards/margins".into(), json!(held_out.margin));
    metrics.write(&record);
    format!(
        "held-out pairs: {} wins, {} ties, {} losses (policy vs reference implicit rewards), loss {:.4}",
        held_out.wins, held_out.ties, held_out.losses, held_out.loss
    )
}

/// A prompt to generate from: its ids, its text and, on the built-in task, its problem.
#[derive(Debug, Clone)]
pub struct EvalPrompt {
    /// The prompt's token ids (with the tokenizer's special tokens).
    pub ids: Vec<u32>,
    /// The prompt as the data gives it.
    pub prompt: Text,
    /// The prompt as text (a conversation rendered with the chat template).
    pub text: String,
    /// The built-in task's problem it poses.
    pub problem: Option<Problem>,
}

/// The first `count` prompts of `eval`, with their problems when the data is the built-in
/// task's (generated, or a file whose every prompt is one, such as `policy_pairs.jsonl`).
pub fn eval_prompts(
    eval: &crate::data::Dataset,
    count: usize,
    tokenizer: &Tokenizer,
) -> Result<Vec<EvalPrompt>> {
    let built_in = eval.source.starts_with("built-in") || is_task_data(eval);
    let mut prompts = Vec::new();
    for pair in eval.pairs.iter().take(count) {
        let text = match &pair.prompt {
            Text::Plain(text) => text.clone(),
            Text::Conversation(messages) => tokenizer.apply_chat_template(messages, true)?,
        };
        let ids = match &pair.prompt {
            Text::Plain(text) => tokenizer.encode(text, true)?,
            Text::Conversation(messages) => tokenizer.encode_chat(messages, true)?,
        };
        let problem = built_in.then(|| Problem::from_prompt(&text)).flatten();
        prompts.push(EvalPrompt {
            ids,
            prompt: pair.prompt.clone(),
            text,
            problem,
        });
    }
    Ok(prompts)
}

/// Whether every prompt of `data` is a problem of the built-in task (`"a+b="`), so that the
/// task's checker can score answers to it.
pub fn is_task_data(data: &crate::data::Dataset) -> bool {
    data.pairs.iter().all(
        |pair| matches!(&pair.prompt, Text::Plain(text) if Problem::from_prompt(text).is_some()),
    )
}

pub(super) fn generations<B: burn::tensor::backend::Backend>(
    model: &CausalLm<B>,
    prompts: &[EvalPrompt],
    tokenizer: &Tokenizer,
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<Generations> {
    let (mut solved, mut scored, mut length) = (0, 0, 0);
    let mut examples = Vec::new();
    for chunk in prompts.chunks(64) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let outputs = generate_greedy(model, &ids, max_new_tokens, tokenizer.eos_id(), device);
        for (prompt, output) in chunk.iter().zip(outputs) {
            length += output.len();
            let text = tokenizer.decode(&output, true)?;
            if let Some(problem) = &prompt.problem {
                scored += 1;
                solved += usize::from(problem.is_solved_by(&text));
            }
            if examples.len() < 4 {
                examples.push((prompt.text.clone(), text));
            }
        }
    }
    Ok(Generations {
        success_rate: (scored > 0).then(|| solved as f64 / scored as f64),
        mean_length: length as f64 / prompts.len().max(1) as f64,
        examples,
    })
}
