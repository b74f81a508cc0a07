//! The pages a person reads: self-contained, escaped, shaded by weight.

use otpref_trainers::run::report::{margins_page, weights_page, WeightedPair};

#[test]
fn weights_page_shades_relative_to_the_heaviest_token_and_escapes_text() {
    let page = weights_page(
        "OTPO <weights>",
        &[WeightedPair {
            prompt: "1+1=".into(),
            chosen: vec![("<b>".into(), 2.0), ("2".into(), 1.0)],
            rejected: vec![("3".into(), 0.0)],
        }],
    );
    assert!(page.contains("OTPO &lt;weights&gt;"));
    assert!(page.contains("&lt;b&gt;") && !page.contains("<b>"));
    assert!(page.contains("rgba(230,120,0,1.000)\">&lt;b&gt;"));
    assert!(page.contains("rgba(230,120,0,0.500)\">2"));
    assert!(page.contains("rgba(230,120,0,0.000)\">3"));
    assert!(!page.contains("<script") && !page.contains("http"));
}

#[test]
fn margins_page_has_one_point_per_pair() {
    let page = margins_page("m", &[(0.5, 0.1), (-1.0, 0.3), (2.0, 0.0)]);
    assert_eq!(page.matches("<circle").count(), 3);
    assert!(!page.contains("<script"));
}
