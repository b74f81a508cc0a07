//! JSON for KL-penalty strengths (ρ, OTPO's ε2), where `f64::INFINITY` means an exact marginal.
//!
//! JSON has no infinity and serde_json writes one as `null`, which then fails to load, so
//! burn's `Config` derive cannot round-trip these fields. The configs that hold them implement
//! `Config` by hand and route these fields through here: non-finite values are saved as the
//! strings `"inf"`, `"-inf"` and `"nan"`; a number, one of those strings (`"infinity"` too), or
//! `null` (how 0.1 saved an infinite penalty) loads back.

use burn::serde::{de::Error, Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match *value {
        v if v.is_finite() => serializer.serialize_f64(v),
        v if v.is_nan() => serializer.serialize_str("nan"),
        v if v > 0.0 => serializer.serialize_str("inf"),
        _ => serializer.serialize_str("-inf"),
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(crate = "burn::serde", untagged)]
    enum Saved {
        Number(Option<f64>),
        Text(String),
    }
    match Saved::deserialize(deserializer)? {
        Saved::Number(Some(value)) => Ok(value),
        Saved::Number(None) => Ok(f64::INFINITY),
        Saved::Text(text) => match text.to_ascii_lowercase().as_str() {
            "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            "nan" => Ok(f64::NAN),
            _ => Err(D::Error::custom(format!(
                "a KL penalty must be a number or \"inf\" (exact marginal), got \"{text}\""
            ))),
        },
    }
}
