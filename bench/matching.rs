//! Criterion benchmark of routing: one view payload against 1, 100 and 1,000 routes.
//! Target (issue 3): under 20 µs per event at 1,000 routes. Run: `cargo bench --bench matching`.

// criterion_group! writes the public `benches` function; a benchmark's fixtures may panic.
#![allow(missing_docs, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use hookrouter::config::Config;
use hookrouter::event::EventKind;

/// A config with `n` routes of the kinds operators write: per-video routes with a threshold
/// and a tag list, regex and nested-field routes, and an `any:` block. The sample view
/// matches only a few of them, as in real use.
fn config_with_routes(n: usize) -> Config {
    let mut text =
        String::from("keys: [k]\ndestinations:\n  d: { url: \"http://127.0.0.1:9/\" }\nroutes:\n");
    for i in 0..n {
        let route = match i % 5 {
            0 => format!("  - {{ name: r{i}, event: view, match: {{ video_token: tok{i}, percentage: {{ gte: 50 }} }}, to: [d] }}\n"),
            1 => format!("  - {{ name: r{i}, event: view, match: {{ tag1: [camp{i}, other{i}], percentage: {{ gte: 90 }} }}, to: [d] }}\n"),
            2 => format!("  - {{ name: r{i}, event: [view, lead], match: {{ viewer_email: {{ regex: '@corp{i}\\.com$' }} }}, to: [d] }}\n"),
            3 => format!("  - {{ name: r{i}, match: {{ variables.plan: plan{i}, country: {{ ne: Nowhere }} }}, to: [d] }}\n"),
            _ => format!("  - {{ name: r{i}, event: view, match: {{ any: [ {{ country: C{i} }}, {{ video_title: {{ starts_with: T{i} }} }} ] }}, to: [d] }}\n"),
        };
        text.push_str(&route);
    }
    Config::from_yaml(
        &text,
        Path::new("bench.yaml"),
        &HashMap::<String, String>::new(),
    )
    .unwrap_or_else(|e| panic!("bench config: {e}"))
}

fn matching(c: &mut Criterion) {
    let view: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/view.json")).expect("fixture is JSON");
    let mut group = c.benchmark_group("match_view");
    for n in [1usize, 100, 1000] {
        let config = config_with_routes(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &config, |b, config| {
            b.iter(|| config.rules.decide(EventKind::View, black_box(&view)))
        });
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
