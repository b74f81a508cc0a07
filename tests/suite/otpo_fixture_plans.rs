//! The unbalanced solver against the POT 0.9.4 plans in `tests/fixtures/otpo_fixture.json`
//! (a copy of the project's shared OTPO fixture): the released OTPO cost (Euclidean distances of
//! masked hidden states + 1e-6, divided by the max over the padded matrix), ones on valid
//! tokens as masses, ρ = 0.2 on both sides, reg_type "entropy".

use crate::common::floats;
use crate::common::{tensor, values, TestBackend};
use burn::tensor::DType;
use otpref::{unbalanced_sinkhorn, UnbalancedConfig};
use serde_json::Value;

const FIXTURE: &str = include_str!("../fixtures/otpo_fixture.json");

#[test]
fn unbalanced_plans_match_the_otpo_fixture() {
    let json: Value = serde_json::from_str(FIXTURE).unwrap();
    let chosen: Vec<Vec<f64>> = json["H_chosen"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let rejected: Vec<Vec<f64>> = json["H_rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let mask_c = floats(&json["mask_chosen"]);
    let mask_r = floats(&json["mask_rejected"]);
    let len = mask_c.len();
    // Released cost: masked rows become zero vectors and stay in the max.
    let mut cost = vec![0.0; len * len];
    for i in 0..len {
        for j in 0..len {
            let d: f64 = chosen[i]
                .iter()
                .zip(&rejected[j])
                .map(|(x, y)| (x * mask_c[i] - y * mask_r[j]).powi(2))
                .sum();
            cost[i * len + j] = d.sqrt() + 1e-6;
        }
    }
    let max = cost.iter().cloned().fold(0.0, f64::max);
    assert!((max - json["cases"][0]["cost_max_before_norm"].as_f64().unwrap()).abs() < 1e-9);
    cost.iter_mut().for_each(|c| *c /= max);

    for case in json["cases"].as_array().unwrap() {
        let epsilon = case["reg"].as_f64().unwrap();
        let rho = case["reg_m"].as_f64().unwrap();
        let expected = floats(&case["plan"]);
        let transport = unbalanced_sinkhorn(
            tensor::<TestBackend, 3>(cost.clone(), [1, len, len], DType::F32),
            tensor::<TestBackend, 2>(mask_c.clone(), [1, len], DType::F32),
            tensor::<TestBackend, 2>(mask_r.clone(), [1, len], DType::F32),
            &UnbalancedConfig::new(epsilon, rho, rho),
        )
        .unwrap();
        let plan = values(transport.plan);
        for (k, (got, want)) in plan.iter().zip(&expected).enumerate() {
            // POT stopped at its own 1e-6 criterion after a few checks: 1e-5 is the margin.
            assert!(
                (got - want).abs() <= 1e-5,
                "reg {epsilon} ({}): plan[{}][{}] = {got}, POT {want}",
                case["dtype"],
                k / len,
                k % len
            );
        }
    }
}
