//! Sampled decoding: temperature, top-k and top-p draw from the closed-form distribution,
//! temperature 0, a temperature near it and top-k 1 are greedy decoding, and a seed fixes the
//! samples whatever the batch.

mod common;

use common::{fixture, B};
use otpref_trainers::hub::{LoadOptions, ModelFolder};
use otpref_trainers::model::{generate_greedy, generate_sampled, CausalLm, Sampling};
use rand::SeedableRng;

#[test]
fn draws_follow_temperature_top_k_and_top_p() {
    // Logits / 0.5 = [4, 2, 1, 0, -2, -6]. Top-k 4 keeps tokens 0..4, with probabilities
    // ∝ e^4, e^2, e^1, e^0 = 0.831, 0.112, 0.041, 0.015. Top-p 0.95 keeps a token while the
    // mass ranked above it is below 0.95: 0, 0.831, 0.943 (kept), 0.985 (token 3 dropped).
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, -3.0];
    let sampling = Sampling {
        temperature: 0.5,
        top_k: 4,
        top_p: 0.95,
        seed: 0,
    };
    let kept = [4.0f64.exp(), 2.0f64.exp(), 1.0f64.exp()];
    let total: f64 = kept.iter().sum();
    let draws = 40_000;
    let mut counts = [0usize; 6];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..draws {
        counts[sampling.choose(&logits, &mut rng) as usize] += 1;
    }
    for (token, &count) in counts.iter().enumerate() {
        let expected = kept.get(token).map_or(0.0, |w| w / total);
        let share = count as f64 / draws as f64;
        let sigma = (expected * (1.0 - expected) / draws as f64).sqrt();
        assert!(
            (share - expected).abs() <= 4.0 * sigma + 1e-12,
            "token {token}: drawn {share}, expected {expected} ({counts:?})"
        );
    }
}

fn model() -> (CausalLm<B>, u32) {
    let folder = ModelFolder::open(fixture("smollm")).unwrap();
    let model = folder
        .load_causal_lm::<B>(&LoadOptions::default(), &Default::default())
        .unwrap();
    (model, folder.tokenizer().unwrap().eos_id())
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![5, 17, 3], vec![8], vec![2, 9, 11, 4, 6], vec![30, 1]]
}

#[test]
fn temperature_zero_and_top_k_one_are_greedy_decoding() {
    let (model, eos) = model();
    let device = Default::default();
    let greedy = generate_greedy(&model, &prompts(), 8, eos, &device);
    assert!(greedy.iter().any(|row| !row.is_empty()));
    let cold = Sampling {
        temperature: 0.0,
        ..Sampling::default()
    };
    let only_best = Sampling {
        top_k: 1,
        seed: 11,
        ..Sampling::default()
    };
    // The limit, not just the special case: a temperature near 0 samples the greedy tokens
    // (the runner-up's probability is at most e^(-gap / T), far below the draws' resolution).
    let near_zero = Sampling {
        temperature: 1e-6,
        seed: 5,
        ..Sampling::default()
    };
    for sampling in [cold, only_best, near_zero] {
        let sampled = generate_sampled(&model, &prompts(), 8, eos, &sampling, 0, &device);
        assert_eq!(sampled, greedy, "{sampling:?}");
    }
}

#[test]
fn a_seed_fixes_the_samples_whatever_the_batch() {
    let (model, eos) = model();
    let device = Default::default();
    let sampling = Sampling {
        seed: 7,
        ..Sampling::default()
    };
    let all = generate_sampled(&model, &prompts(), 10, eos, &sampling, 0, &device);
    assert_eq!(
        all,
        generate_sampled(&model, &prompts(), 10, eos, &sampling, 0, &device)
    );
    // The last two prompts alone, as rows 2 and 3 of the list: the same samples.
    let tail = generate_sampled(&model, &prompts()[2..], 10, eos, &sampling, 2, &device);
    assert_eq!(tail, all[2..]);
    let reseeded = Sampling {
        seed: 8,
        ..sampling
    };
    let other = generate_sampled(&model, &prompts(), 10, eos, &reseeded, 0, &device);
    assert_ne!(other, all, "another seed draws other tokens");
    let greedy = generate_greedy(&model, &prompts(), 10, eos, &device);
    assert_ne!(all, greedy, "temperature 1 is not greedy on random weights");
}

#[test]
fn out_of_range_settings_name_their_flag() {
    let hot = Sampling {
        temperature: -1.0,
        ..Sampling::default()
    };
    assert!(hot.check().unwrap_err().contains("--temperature"));
    let nucleus = Sampling {
        top_p: 0.0,
        ..Sampling::default()
    };
    assert!(nucleus.check().unwrap_err().contains("--top-p"));
    assert!(Sampling::default().check().is_ok());
}
