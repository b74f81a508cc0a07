//! On-policy pairs and best-of-n: K samples per prompt that do not depend on the batching,
//! the first best-scored answer paired with the first worst, prompts whose answers all score
//! the same skipped and counted; the task's checker and a reward model as scores.

mod common;

use std::path::Path;
use std::process::Command;

use burn::tensor::{Bool, Int, Tensor, TensorData};
use common::{failure, fixture, run_ok, ScratchFolder, B};
use otpref_trainers::data::{PreferencePair, Text};
use otpref_trainers::hub::{LoadOptions, ModelFolder};
use otpref_trainers::model::{generate_sampled, RewardModel, Sampling};
use otpref_trainers::run::best_of_n::best_of_n_rates;
use otpref_trainers::run::dpo_eval::EvalPrompt;
use otpref_trainers::run::policy_pairs::{checker_scores, pair_answers};
use otpref_trainers::run::samples::{sample_answers, SampleSettings};
use otpref_trainers::task::{vocabulary, Problem};
use otpref_trainers::tokenizer::{Message, Tokenizer};
use serde_json::Value;

const DPO: &str = env!("CARGO_BIN_EXE_dpo_trainer");
const REWARD: &str = env!("CARGO_BIN_EXE_reward_trainer");

fn prompt(text: &str, problem: Option<Problem>) -> EvalPrompt {
    EvalPrompt {
        ids: vec![1, 2],
        prompt: Text::Plain(text.into()),
        text: text.into(),
        problem,
    }
}

fn answers(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| row.iter().map(|s| s.to_string()).collect())
        .collect()
}

#[test]
fn the_first_best_answer_is_paired_with_the_first_worst() {
    let prompts = [prompt("p0", None), prompt("p1", None), prompt("p2", None)];
    let answers = answers(&[
        &["a", "b", "c", "d"],
        &["e", "f", "g", "h"],
        &["i", "j", "k", "l"],
    ]);
    let scores = vec![
        vec![0.5, 2.0, -1.0, 2.0],  // best b (first of two 2.0), worst c
        vec![1.0, 1.0, 1.0, 1.0],   // all equal: skipped
        vec![-3.0, 0.0, -3.0, 0.0], // best j, worst i (the first of each)
    ];
    let (pairs, report) = pair_answers(&prompts, &answers, &scores);
    let pair = |p: &str, c: &str, r: &str, m: f64| PreferencePair {
        prompt: Text::Plain(p.into()),
        chosen: Text::Plain(c.into()),
        rejected: Text::Plain(r.into()),
        margin: Some(m),
        chosen_weights: None,
        rejected_weights: None,
    };
    assert_eq!(
        pairs,
        vec![pair("p0", "b", "c", 3.0), pair("p2", "j", "i", 3.0)]
    );
    assert_eq!(report.prompts, 3);
    assert_eq!(report.samples_per_prompt, 4);
    assert_eq!(report.pairs, 2);
    assert_eq!(report.skipped_all_equal, 1);
    let mean = (3.5 + 4.0 - 6.0) / 12.0;
    assert!((report.mean_score - mean).abs() < 1e-12);
}

#[test]
fn a_conversation_prompt_gets_assistant_messages_as_responses() {
    let messages = vec![Message::new("user", "hi")];
    let mut p = prompt("rendered", None);
    p.prompt = Text::Conversation(messages.clone());
    let (pairs, _) = pair_answers(&[p], &answers(&[&["good", "bad"]]), &[vec![1.0, 0.0]]);
    assert_eq!(pairs[0].prompt, Text::Conversation(messages));
    assert_eq!(
        pairs[0].chosen,
        Text::Conversation(vec![Message::new("assistant", "good")])
    );
    assert_eq!(
        pairs[0].rejected,
        Text::Conversation(vec![Message::new("assistant", "bad")])
    );
}

#[test]
fn the_checker_scores_the_answer_after_the_last_colon() {
    let problem = Problem { a: 347, b: 258 };
    let prompts = [prompt("347+258=", Some(problem))];
    let scores = checker_scores(
        &prompts,
        &answers(&[&["7+8=15,4+5+1=10,3+2+1=6:605", "x:604", "605", ":605"]]),
    )
    .unwrap();
    assert_eq!(scores, vec![vec![1.0, 0.0, 0.0, 1.0]]);
    let error = checker_scores(&[prompt("hello", None)], &answers(&[&["a"]])).unwrap_err();
    assert!(error.to_string().contains("--reward-model"), "{error}");
}

#[test]
fn samples_do_not_depend_on_the_batching() {
    let folder = ModelFolder::open(fixture("smollm")).unwrap();
    let device = Default::default();
    let model = folder
        .load_causal_lm::<B>(&LoadOptions::default(), &device)
        .unwrap();
    let tokenizer = folder.tokenizer().unwrap();
    // 40 prompts of 3 samples: 120 rows, more than one decoding batch.
    let prompts: Vec<EvalPrompt> = [
        vec![5u32, 17, 3],
        vec![8],
        vec![2, 9, 11, 4, 6],
        vec![30, 1],
    ]
    .into_iter()
    .cycle()
    .take(40)
    .map(|ids| EvalPrompt {
        ids,
        ..prompt("p", None)
    })
    .collect();
    let sampling = Sampling {
        seed: 11,
        ..Sampling::default()
    };
    let settings = SampleSettings {
        per_prompt: 3,
        sampling,
        max_new_tokens: 6,
    };
    let sampled = sample_answers(&model, &prompts, &tokenizer, &settings, &device).unwrap();
    assert_eq!(sampled.len(), 40);
    let eos = tokenizer.eos_id();
    for (i, p) in prompts.iter().enumerate() {
        // Prompt i alone: its samples from streams 3i, 3i+1, 3i+2.
        let alone = generate_sampled(
            &model,
            &vec![p.ids.clone(); 3],
            6,
            eos,
            &sampling,
            3 * i as u64,
            &device,
        );
        let texts: Vec<String> = alone
            .iter()
            .map(|ids| tokenizer.decode(ids, true).unwrap())
            .collect();
        assert_eq!(sampled[i], texts, "prompt {i}");
    }
    // Samples of one prompt differ (the streams are distinct).
    assert!(sampled.iter().any(|s| s[0] != s[1] || s[1] != s[2]));
}

#[test]
fn best_of_n_counts_ties_at_the_top_by_their_share_of_correct_answers() {
    let correct = vec![
        vec![0.0, 1.0, 0.0],
        vec![1.0, 0.0, 0.0],
        vec![0.0, 0.0, 0.0],
    ];
    let rewards = vec![
        vec![0.1, 0.9, 0.5], // the pick is correct
        vec![2.0, 2.0, 1.0], // tied at the top: one of two correct
        vec![0.0, 1.0, 2.0], // nothing to pick
    ];
    let result = best_of_n_rates(&correct, &rewards);
    assert_eq!((result.prompts, result.n), (3, 3));
    assert!((result.reward_model - (1.0 + 0.5) / 3.0).abs() < 1e-12);
    assert!((result.random - (1.0 / 3.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    assert!((result.oracle - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn a_reward_model_that_scores_correctness_picks_as_well_as_the_oracle() {
    // 50 prompts of 6 answers, correct at random; rewards that rank every correct answer
    // above every wrong one (correctness plus noise below one half) pick like the oracle, and
    // reversed rewards never pick a correct answer where a wrong one exists.
    let mut state = 7u64;
    let mut unit = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let correct: Vec<Vec<f64>> = (0..50)
        .map(|_| (0..6).map(|_| f64::from(u8::from(unit() < 0.3))).collect())
        .collect();
    let right: Vec<Vec<f64>> = correct
        .iter()
        .map(|row| row.iter().map(|c| c + 0.4 * unit()).collect())
        .collect();
    let result = best_of_n_rates(&correct, &right);
    let oracle = correct.iter().filter(|row| row.contains(&1.0)).count() as f64 / 50.0;
    assert!((result.oracle - oracle).abs() < 1e-12);
    assert!((result.reward_model - oracle).abs() < 1e-12, "{result:?}");
    let wrong: Vec<Vec<f64>> = right
        .iter()
        .map(|row| row.iter().map(|r| -r).collect())
        .collect();
    let all_correct = correct.iter().filter(|row| !row.contains(&0.0)).count() as f64 / 50.0;
    let reversed = best_of_n_rates(&correct, &wrong);
    assert!(
        (reversed.reward_model - all_correct).abs() < 1e-12,
        "{reversed:?}"
    );
    assert!(reversed.reward_model < result.random && result.random < result.reward_model);
}

fn tiny(program: &str, output: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(common::tiny_builtin(output, 16, 8));
    command.args(["--batch-size", "4", "--log-every", "1", "--eval-every", "0"]);
    command.args(args);
    command
}

/// Whether `answer` ends with `:` and the sum of the prompt `a+b=`, read here from the text.
fn adds_up(prompt: &str, answer: &str) -> bool {
    let (a, b) = prompt.trim_end_matches('=').split_once('+').unwrap();
    let sum = a.parse::<u32>().unwrap() + b.parse::<u32>().unwrap();
    answer.rsplit_once(':').map(|(_, tail)| tail.trim()) == Some(sum.to_string().as_str())
}

#[test]
fn the_task_checker_pairs_a_correct_sample_with_a_wrong_one_and_counts_skipped_prompts() {
    let out = ScratchFolder::empty("policy-pairs-checker");
    // 200 supervised steps on 16 prompts: the reference answers most of them right, some not,
    // so some prompts' four samples disagree (pairs) and others all agree (skipped).
    // The default built-in model (the tiny one of the other tests learns too little).
    let mut command = Command::new(DPO);
    command.args(["--output", out.0.to_str().unwrap()]);
    command.args(["--builtin-train-pairs", "16", "--builtin-eval-pairs", "4"]);
    command.args([
        "--sft-steps",
        "200",
        "--steps",
        "1",
        "--pairs-from-policy",
        "4",
    ]);
    command.args([
        "--eval-prompts",
        "1",
        "--eval-every",
        "0",
        "--max-new-tokens",
        "40",
    ]);
    run_ok(&mut command);
    let lines = std::fs::read_to_string(out.0.join("policy_pairs.jsonl")).unwrap();
    let pairs: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for pair in &pairs {
        let prompt = text(&pair["prompt"]);
        assert!(adds_up(prompt, text(&pair["chosen"])), "{pair}");
        assert!(!adds_up(prompt, text(&pair["rejected"])), "{pair}");
        assert_eq!(pair["margin"].as_f64(), Some(1.0), "{pair}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("policy_pairs.json")).unwrap())
            .unwrap();
    let (kept, skipped) = (
        report["pairs"].as_u64().unwrap(),
        report["skipped_all_equal"].as_u64().unwrap(),
    );
    assert_eq!(kept as usize, pairs.len());
    assert_eq!(kept + skipped, 16);
    assert!(kept > 0 && skipped > 0, "{report}");
}

/// The reward of `prompt` + `response` + EOS, computed here from the saved reward model.
fn reward_of(model: &RewardModel<B>, tokenizer: &Tokenizer, prompt: &str, response: &str) -> f32 {
    let mut ids = tokenizer.encode(prompt, true).unwrap();
    ids.extend(tokenizer.encode(response, false).unwrap());
    ids.push(tokenizer.eos_id());
    let len = ids.len();
    let device = Default::default();
    let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, len]), &device);
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; len], [1, len]), &device);
    model.forward(input, mask).rewards.into_scalar()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap()
}

#[test]
fn dpo_trains_on_pairs_a_reward_model_ranked_and_resumes_exactly_best_of_n_samples_it() {
    let reward = ScratchFolder::empty("policy-pairs-reward");
    run_ok(&mut tiny(REWARD, &reward.0, &["--steps", "2"]));
    let reward_dir = reward.0.join("model");
    let dpo_args = [
        "--sft-steps",
        "2",
        "--steps",
        "4",
        "--save-every",
        "4",
        "--eval-prompts",
        "2",
        "--max-new-tokens",
        "8",
        "--pairs-from-policy",
        "3",
        "--reward-model",
        reward_dir.to_str().unwrap(),
    ];
    let straight = ScratchFolder::empty("policy-pairs-straight");
    let stdout = run_ok(&mut tiny(DPO, &straight.0, &dpo_args)).stdout;
    assert!(String::from_utf8_lossy(&stdout)
        .contains("on-policy pairs: 3 samples for each of 16 prompts"));

    // Every pair's margin is the saved reward model's reward gap, computed here.
    let folder = ModelFolder::open(&reward_dir).unwrap();
    let model = folder
        .load_reward_model::<B>(&LoadOptions::default(), &Default::default())
        .unwrap();
    let tokenizer = Tokenizer::characters(vocabulary());
    let lines = std::fs::read_to_string(straight.0.join("policy_pairs.jsonl")).unwrap();
    let pairs: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!pairs.is_empty());
    for pair in &pairs {
        let prompt = text(&pair["prompt"]);
        let chosen = reward_of(&model, &tokenizer, prompt, text(&pair["chosen"]));
        let rejected = reward_of(&model, &tokenizer, prompt, text(&pair["rejected"]));
        let margin = pair["margin"].as_f64().unwrap();
        assert!(margin > 0.0, "{pair}");
        assert!(
            ((chosen - rejected) as f64 - margin).abs() < 1e-4,
            "{pair}: {chosen} - {rejected}"
        );
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(straight.0.join("summary.json")).unwrap())
            .unwrap();
    let report = &summary["policy_pairs"][0];
    assert_eq!(report["pairs"].as_u64().unwrap() as usize, pairs.len());
    assert_eq!(
        report["pairs"].as_u64().unwrap() + report["skipped_all_equal"].as_u64().unwrap(),
        16
    );

    // Resumed inside DPO (from step 4 of 6), the run reads its pairs back and ends with the
    // same model.
    let resumed = ScratchFolder::empty("policy-pairs-resumed");
    run_ok(tiny(DPO, &resumed.0, &dpo_args).args(["--save-every", "2"]));
    std::fs::remove_dir_all(resumed.0.join("checkpoints/step-00000006")).unwrap();
    std::fs::remove_dir_all(resumed.0.join("model")).unwrap();
    let stdout =
        run_ok(tiny(DPO, &resumed.0, &dpo_args).args(["--save-every", "2", "--resume"])).stdout;
    assert!(String::from_utf8_lossy(&stdout).contains("resumed from"));
    let model_bytes = |run: &Path| std::fs::read(run.join("model/model.safetensors")).unwrap();
    assert!(
        model_bytes(&straight.0) == model_bytes(&resumed.0),
        "the resumed model differs"
    );

    // Best-of-n samples the trained policy and ranks its answers with the reward model.
    let bon = ScratchFolder::empty("policy-pairs-best-of-n");
    let policy = straight.0.join("model");
    let args = [
        "--steps",
        "1",
        "--best-of-n",
        "3",
        "--best-of-n-prompts",
        "4",
        "--max-new-tokens",
        "8",
        "--policy",
        policy.to_str().unwrap(),
    ];
    let stdout = run_ok(&mut tiny(REWARD, &bon.0, &args)).stdout;
    assert!(String::from_utf8_lossy(&stdout).contains("best-of-3 on 4 held-out prompts"));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(bon.0.join("summary.json")).unwrap())
            .unwrap();
    let result = &summary["best_of_n"];
    let rate = |name: &str| result[name].as_f64().unwrap();
    assert!(rate("random") <= rate("oracle") && rate("reward_model") <= rate("oracle"));
}

#[test]
fn iterative_dpo_resamples_every_n_steps_and_resumes_exactly_at_and_inside_a_round() {
    let reward = ScratchFolder::empty("iterative-reward");
    run_ok(&mut tiny(REWARD, &reward.0, &["--steps", "2"]));
    let reward_dir = reward.0.join("model");
    let args = [
        "--sft-steps",
        "2",
        "--steps",
        "4",
        "--save-every",
        "1",
        "--keep-checkpoints",
        "8",
        "--eval-prompts",
        "2",
        "--max-new-tokens",
        "8",
        "--pairs-from-policy",
        "3",
        "--resample-every",
        "2",
        "--reward-model",
        reward_dir.to_str().unwrap(),
    ];
    let straight = ScratchFolder::empty("iterative-straight");
    run_ok(&mut tiny(DPO, &straight.0, &args));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(straight.0.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["policy_pairs"].as_array().unwrap().len(), 2);
    let read = |run: &Path, name: &str| std::fs::read(run.join(name)).unwrap();
    let (round0, round1) = (
        read(&straight.0, "policy_pairs.jsonl"),
        read(&straight.0, "policy_pairs-round-1.jsonl"),
    );
    assert!(
        !round1.is_empty() && round1 != round0,
        "round 1 did not sample anew"
    );

    // Resumed at the start of round 1 (step 4 of 6: it samples from the restored policy) and
    // inside it (step 5: it reads round 1's pairs back), the run ends with the same model.
    for (from, drop) in [(4, [5, 6]), (5, [6, 6])] {
        let resumed = ScratchFolder::empty(&format!("iterative-resumed-{from}"));
        run_ok(&mut tiny(DPO, &resumed.0, &args));
        for step in drop {
            let _ = std::fs::remove_dir_all(resumed.0.join(format!("checkpoints/step-{step:08}")));
        }
        std::fs::remove_dir_all(resumed.0.join("model")).unwrap();
        if from == 4 {
            std::fs::remove_file(resumed.0.join("policy_pairs-round-1.jsonl")).unwrap();
        }
        let stdout = run_ok(tiny(DPO, &resumed.0, &args).arg("--resume")).stdout;
        assert!(String::from_utf8_lossy(&stdout).contains("resumed from"));
        assert!(
            read(&resumed.0, "policy_pairs-round-1.jsonl") == round1,
            "from {from}"
        );
        assert!(
            read(&straight.0, "model/model.safetensors")
                == read(&resumed.0, "model/model.safetensors"),
            "resumed from step {from}: the model differs"
        );
    }
}

#[test]
fn sampling_flags_are_checked_before_training() {
    let cases: [(&str, &[&str], &str); 8] = [
        (
            DPO,
            &["--pairs-from-policy", "1"],
            "at least 2 samples per prompt",
        ),
        (
            DPO,
            &["--pairs-from-policy", "4", "--temperature", "0"],
            "--temperature 0",
        ),
        (DPO, &["--reward-model", "x"], "give --pairs-from-policy K"),
        (
            DPO,
            &["--resample-every", "2"],
            "give --pairs-from-policy K",
        ),
        (DPO, &["--top-p", "0"], "--top-p must lie in (0, 1]"),
        (REWARD, &["--best-of-n", "4"], "give --policy DIR"),
        (REWARD, &["--policy", "x"], "give --best-of-n N"),
        (
            REWARD,
            &["--best-of-n", "1", "--policy", "x"],
            "at least 2 answers",
        ),
    ];
    for (program, args, expected) in cases {
        let stderr = failure(program, args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Own data needs a reward model to score the samples.
    let out = ScratchFolder::empty("policy-pairs-own-data");
    std::fs::create_dir_all(&out.0).unwrap();
    let data = out.0.join("pairs.jsonl");
    let line = "{\"prompt\": \"12\", \"chosen\": \"3\", \"rejected\": \"4\"}\n";
    std::fs::write(&data, line.repeat(3)).unwrap();
    let stderr = failure(
        DPO,
        &["--data", data.to_str().unwrap(), "--pairs-from-policy", "4"],
    );
    assert!(
        stderr
            .contains("pairs.jsonl: --pairs-from-policy on your own data needs --reward-model DIR"),
        "{stderr}"
    );
    // Best-of-n needs prompts the task's checker can score, and a policy that loads: both are
    // found before training, as is a reward model that does not load.
    let data = data.to_str().unwrap();
    let stderr = failure(
        REWARD,
        &[
            "--data",
            data,
            "--best-of-n",
            "4",
            "--policy",
            "/no/such/policy",
        ],
    );
    assert!(stderr.contains("not all its problems"), "{stderr}");
    let stderr = failure(REWARD, &["--best-of-n", "4", "--policy", "/no/such/policy"]);
    assert!(stderr.contains("/no/such/policy"), "{stderr}");
    let stderr = failure(
        DPO,
        &["--pairs-from-policy", "4", "--reward-model", "/no/such/rm"],
    );
    assert!(stderr.contains("/no/such/rm"), "{stderr}");
}
