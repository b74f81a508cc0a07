//! `curves.png`: loss, accuracy and margins over the steps of a run, read from
//! `metrics.jsonl`, drawn with plotters on a bitmap with a bundled font (DejaVu Sans,
//! `trainers/assets/`), so no system fonts or C libraries are needed.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The panels: a title, the training metric names (DPO's first, the reward model's second),
/// and the held-out ones.
const PANELS: [(&str, [&str; 2], [&str; 2]); 3] = [
    ("loss", ["loss", "loss"], ["eval/loss", "eval/loss"]),
    (
        "accuracy",
        ["rewards/accuracies", "accuracy"],
        ["eval/rewards/accuracies", "eval/accuracy"],
    ),
    (
        "margin",
        ["rewards/margins", "margin"],
        ["eval/rewards/margins", "eval/rewards/margins"],
    ),
];

/// Draws `OUTPUT/curves.png` from `OUTPUT/metrics.jsonl`.
pub fn write_curves(output: &Path) -> Result<()> {
    let metrics_path = output.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let path = output.join("curves.png");
    draw(&path, &records).map_err(|e| Error::invalid(&path, format!("could not be drawn: {e}")))
}

fn series(records: &[Value], names: &[&str; 2]) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| {
            let step = r.get("step")?.as_f64()?;
            let value = names.iter().find_map(|n| r.get(*n)?.as_f64())?;
            value.is_finite().then_some((step, value))
        })
        .collect()
}

fn draw(path: &Path, records: &[Value]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    // Registering twice (a second run in one process) is harmless.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let root = BitMapBackend::new(path, (900, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, (title, train_names, eval_names)) in root.split_evenly((3, 1)).iter().zip(PANELS) {
        // Training records carry a phase (sft, dpo, reward), one line each; held-out records
        // have none.
        let mut phases: Vec<&str> = records
            .iter()
            .filter_map(|r| r.get("phase")?.as_str())
            .collect();
        phases.dedup();
        let train: Vec<(&str, Vec<(f64, f64)>)> = phases
            .iter()
            .map(|phase| {
                let of_phase: Vec<Value> = records
                    .iter()
                    .filter(|r| r.get("phase").and_then(Value::as_str) == Some(phase))
                    .cloned()
                    .collect();
                (*phase, series(&of_phase, &train_names))
            })
            .collect();
        let eval = series(
            &records
                .iter()
                .filter(|r| r.get("phase").is_none())
                .cloned()
                .collect::<Vec<_>>(),
            &eval_names,
        );
        let all: Vec<&(f64, f64)> = train
            .iter()
            .flat_map(|(_, points)| points)
            .chain(&eval)
            .collect();
        if all.is_empty() {
            continue;
        }
        let (x0, x1) = bounds(all.iter().map(|p| p.0));
        let (y0, y1) = bounds(all.iter().map(|p| p.1));
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style(("sans-serif", 12))
            .draw()?;
        for ((phase, points), color) in train.into_iter().zip([GREEN, BLUE, MAGENTA].iter().cycle())
        {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, color))?
                .label(phase)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        if !eval.is_empty() {
            chart
                .draw_series(LineSeries::new(eval, RED.stroke_width(2)))?
                .label("held out")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// A range around the values, never empty.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}
