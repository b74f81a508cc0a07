//! Every config survives a save/load round trip through burn's `Config` (JSON), infinite KL
//! penalties included, and a config loaded with bad values is refused when used, not loaded
//! silently into a NaN.

use crate::common::{tensor, TestBackend};
use burn::config::Config;
use burn::tensor::DType;
use otpref::{
    sinkhorn, unbalanced_sinkhorn, AplotConfig, BtLossConfig, CostNormalization, DpoLossConfig,
    DpoLossType, GradientMode, OtpoConfig, OtprefError, SinkhornConfig, UnbalancedConfig,
    WeightBudget,
};
use serde_json::Value;
use std::fmt::Debug;

/// Saves `config` to a file, loads it back, and compares the two field by field (through
/// `Debug`, which prints `inf` for an infinite float).
fn round_trip<C: Config + Debug>(name: &str, config: &C) -> C {
    let path = std::env::temp_dir().join(format!("otpref-{}-{name}.json", std::process::id()));
    config.save(&path).unwrap();
    let loaded = C::load(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    std::fs::remove_file(&path).ok();
    assert_eq!(format!("{loaded:?}"), format!("{config:?}"), "{name}");
    loaded
}

#[test]
fn every_config_round_trips_through_json() {
    round_trip(
        "sinkhorn",
        &SinkhornConfig::new(0.05)
            .with_gradient(GradientMode::Unrolled)
            .with_check_every(3),
    );
    for (rho_a, rho_b) in [
        (0.5, 2.0),
        (f64::INFINITY, 0.3),
        (f64::INFINITY, f64::INFINITY),
    ] {
        let loaded = round_trip(
            "unbalanced",
            &UnbalancedConfig::new(0.1, rho_a, rho_b).with_tolerance(1e-9),
        );
        assert_eq!((loaded.rho_a, loaded.rho_b), (rho_a, rho_b));
    }
    for penalty in [0.2, f64::INFINITY] {
        let loaded = round_trip(
            "otpo",
            &OtpoConfig::new()
                .with_marginal_penalty(penalty)
                .with_budget(WeightBudget::OwnLength)
                .with_normalization(CostNormalization::ValidPairsAlways),
        );
        assert_eq!(loaded.marginal_penalty, penalty);
    }
    round_trip("aplot", &AplotConfig::new().with_gamma(0.3));
    round_trip(
        "dpo",
        &DpoLossConfig::new().with_loss_type(DpoLossType::SimPo { gamma: 0.5 }),
    );
    round_trip(
        "bt",
        &BtLossConfig::new().with_center_rewards_coefficient(0.01),
    );
}

/// `config` as JSON with one field replaced.
fn with_field<C: Config>(config: &C, field: &str, value: Value) -> Value {
    let mut json = serde_json::to_value(config).unwrap();
    json[field] = value;
    json
}

#[test]
fn an_infinite_penalty_saved_as_null_still_loads() {
    // How 0.1 saved an infinite ρ (serde_json writes infinity as null).
    let mut json = with_field(&UnbalancedConfig::new(0.1, 1.0, 1.0), "rho_a", Value::Null);
    let loaded: UnbalancedConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(loaded.rho_a, f64::INFINITY);
    json["rho_a"] = Value::from("a lot");
    let err = serde_json::from_value::<UnbalancedConfig>(json).unwrap_err();
    assert!(err.to_string().contains("\"inf\""), "{err}");
}

#[test]
fn configs_loaded_with_bad_values_are_refused_when_used() {
    let cost = tensor::<TestBackend, 3>(vec![0.0, 1.0, 1.0, 0.0], [1, 2, 2], DType::F32);
    let mass = || tensor::<TestBackend, 2>(vec![0.5, 0.5], [1, 2], DType::F32);
    let json = with_field(&SinkhornConfig::new(0.1), "epsilon", Value::from(-1.0));
    let config: SinkhornConfig = serde_json::from_value(json).unwrap();
    let err = sinkhorn(cost.clone(), mass(), mass(), &config).unwrap_err();
    assert!(
        matches!(&err, OtprefError::InvalidParameter(m) if m.contains("epsilon")),
        "{err}"
    );
    // A NaN penalty saves as "nan" and loads back as NaN, which the solver refuses.
    let config = UnbalancedConfig::new(0.1, f64::NAN, 1.0);
    let loaded: UnbalancedConfig = serde_json::from_str(&config.to_string()).unwrap();
    let err = unbalanced_sinkhorn(cost, mass(), mass(), &loaded).unwrap_err();
    assert!(
        matches!(&err, OtprefError::InvalidParameter(m) if m.contains("rho_a")),
        "{err}"
    );
}

#[test]
fn a_saved_config_with_a_bad_value_is_refused_naming_the_field() {
    let saved = SinkhornConfig::new(0.1).with_max_iters(500).to_string();
    assert!(saved.contains("\"epsilon\": 0.1") && saved.contains("\"max_iters\": 500"));
    for (from, to, field) in [
        ("\"epsilon\": 0.1", "\"epsilon\": null", "epsilon"),
        ("\"epsilon\": 0.1", "\"epsilon\": NaN", "epsilon"),
        ("\"epsilon\": 0.1", "\"epsilon\": 1e999", "epsilon"),
        ("\"max_iters\": 500", "\"max_iters\": -5", "max_iters"),
    ] {
        let path = std::env::temp_dir().join(format!("otpref-{}-bad.json", std::process::id()));
        std::fs::write(&path, saved.replace(from, to)).unwrap();
        let err = SinkhornConfig::load(&path).unwrap_err();
        std::fs::remove_file(&path).ok();
        let message = format!("{err:?}");
        assert!(
            message.contains(&format!("{field}: ")) && message.contains("line"),
            "{to}: {message}"
        );
        // The unbalanced config reads the same fields the same way.
        let unbalanced = UnbalancedConfig::new(0.1, 1.0, 1.0)
            .with_max_iters(500)
            .to_string();
        let err =
            serde_json::from_str::<UnbalancedConfig>(&unbalanced.replace(from, to)).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("{field}: ")),
            "{to}: {err}"
        );
    }
}
