//! The scenario-file language: any text is parsed and checked; a valid file gives a plan,
//! an invalid one errors with positions inside the text, rendered without a panic.

use std::path::Path;

/// Parses and checks `data` as a scenario file (files it names are looked up in a
/// directory that does not exist), and renders every error.
pub fn scenario(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/fuzz.toml");
    match sva::scenario::parse(src, path) {
        Ok(plan) => assert!(plan.step_count <= src.len(), "more steps than bytes"),
        Err(diags) => {
            assert!(!diags.is_empty(), "a refusal names its reason");
            for d in &diags {
                let text = d.render("fuzz.toml", src);
                assert!(text.starts_with("fuzz.toml"), "{text}");
            }
        }
    }
}
