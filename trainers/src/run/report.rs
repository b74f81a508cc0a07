//! `weights.html`: one self-contained page (no scripts, no fetched assets) showing, for a few
//! held-out pairs, each response token shaded by the weight the run's method gives it (the
//! OTPO paper's Figure 2, for any scheme). People look at this before they trust a scheme.

use std::fmt::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// One held-out pair's response tokens with their weights.
#[derive(Debug, Clone)]
pub struct WeightedPair {
    /// The prompt's text.
    pub prompt: String,
    /// Chosen response tokens (text) and weights.
    pub chosen: Vec<(String, f32)>,
    /// Rejected response tokens (text) and weights.
    pub rejected: Vec<(String, f32)>,
}

/// Writes the page to `path`.
pub fn write_weights_page(path: &Path, title: &str, pairs: &[WeightedPair]) -> Result<()> {
    std::fs::write(path, weights_page(title, pairs)).map_err(|e| Error::io(path, e))
}

/// The page as HTML.
pub fn weights_page(title: &str, pairs: &[WeightedPair]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}\
         .tok{{font-family:monospace;white-space:pre;padding:1px 0;border-radius:2px}}\
         .row{{margin:.3em 0 .8em 0;line-height:1.9}} h2{{font-size:1em;margin-top:2em}}\
         .label{{display:inline-block;width:6em;color:#666}}</style></head><body>\
         <h1>{title}</h1><p>Each response token is shaded by its weight in the loss (darker: \
         heavier; hover for the value). A weight of 1 everywhere is plain DPO.</p>",
        title = escape(title)
    );
    for (i, pair) in pairs.iter().enumerate() {
        let heaviest = pair
            .chosen
            .iter()
            .chain(&pair.rejected)
            .map(|(_, w)| *w)
            .fold(1e-6f32, f32::max);
        let _ = write!(
            html,
            "<h2>pair {}: <span class=\"tok\">{}</span></h2>",
            i + 1,
            escape(&pair.prompt)
        );
        for (label, tokens) in [("chosen", &pair.chosen), ("rejected", &pair.rejected)] {
            let _ = write!(
                html,
                "<div class=\"row\"><span class=\"label\">{label}</span>"
            );
            for (text, weight) in tokens {
                let alpha = (weight / heaviest).clamp(0.0, 1.0);
                let _ = write!(
                    html,
                    "<span class=\"tok\" title=\"{weight:.3}\" style=\"background:rgba(230,120,0,{alpha:.3})\">{}</span>",
                    escape(text)
                );
            }
            html.push_str("</div>");
        }
    }
    html.push_str("</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `margins.html`: APLOT's margins against the reward gaps `r_c − r_r` of held-out pairs, as
/// an inline SVG scatter (each point a pair), self-contained like `weights.html`.
pub fn write_margins_page(path: &Path, title: &str, points: &[(f32, f32)]) -> Result<()> {
    std::fs::write(path, margins_page(title, points)).map_err(|e| Error::io(path, e))
}

/// The margins page as HTML.
pub fn margins_page(title: &str, points: &[(f32, f32)]) -> String {
    let (width, height, pad) = (640.0f32, 400.0f32, 50.0f32);
    let range = |values: Vec<f32>| {
        let lo = values
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min)
            .min(0.0);
        let hi = values
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
            .max(lo + 1e-3);
        (lo, hi)
    };
    let (x0, x1) = range(points.iter().map(|p| p.0).collect());
    let (y0, y1) = range(points.iter().map(|p| p.1).collect());
    let x = |v: f32| pad + (v - x0) / (x1 - x0) * (width - 2.0 * pad);
    let y = |v: f32| height - pad - (v - y0) / (y1 - y0) * (height - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>\
         <line x1=\"{}\" y1=\"{pad}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">reward gap r_c − r_r ({x0:.2} … {x1:.2})</text>\
         <text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">APLOT margin ({y0:.2} … {y1:.2})</text>",
        y(0.0),
        width - pad,
        y(0.0),
        x(0.0),
        x(0.0),
        height - pad,
        width / 2.0,
        height - 10.0,
        height / 2.0,
        height / 2.0,
    );
    for (gap, margin) in points {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"rgba(30,90,200,0.6)\"><title>gap {gap:.3}, margin {margin:.3}</title></circle>",
            x(*gap),
            y(*margin)
        );
    }
    svg.push_str("</svg>");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:60em;margin:2em auto\"><h1>{t}</h1>\
         <p>Each point is a held-out pair: the trained model's reward gap against the margin APLOT \
         gives it (pairs the model already separates, or that resemble each other, get \
         different margins). {n} pairs.</p>{svg}</body></html>\n",
        t = escape(title),
        n = points.len()
    )
}
