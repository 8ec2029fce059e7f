//! Fuzzes condition compilation and matching: input is `MATCH_YAML \0 PAYLOAD_JSON`. The
//! `match:` mapping is put into an otherwise valid config, compiled, and every kind of
//! event with the payload is routed. Neither step may panic or hang.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use serde_yaml::{Mapping, Value};

fn config_with(conditions: Value) -> Option<String> {
    let mut route = Mapping::new();
    route.insert("name".into(), "fuzzed".into());
    route.insert("match".into(), conditions);
    route.insert("to".into(), Value::Sequence(vec!["d".into()]));
    let mut dest = Mapping::new();
    dest.insert("url".into(), "http://127.0.0.1:9/".into());
    let mut destinations = Mapping::new();
    destinations.insert("d".into(), Value::Mapping(dest));
    let mut root = Mapping::new();
    root.insert("keys".into(), Value::Sequence(vec!["k".into()]));
    root.insert("destinations".into(), Value::Mapping(destinations));
    root.insert(
        "routes".into(),
        Value::Sequence(vec![Value::Mapping(route)]),
    );
    serde_yaml::to_string(&Value::Mapping(root)).ok()
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(rule), Some(payload)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(rule) = std::str::from_utf8(rule) else {
        return;
    };
    let Ok(conditions) = serde_yaml::from_str::<Value>(rule) else {
        return;
    };
    if !conditions.is_mapping() {
        return;
    }
    let Some(text) = config_with(conditions) else {
        return;
    };
    let env: HashMap<String, String> = HashMap::new();
    let Ok(config) = hookrouter::config::Config::from_yaml(&text, Path::new("fuzz.yaml"), &env)
    else {
        return;
    };
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    for kind in hookrouter::event::EventKind::ALL {
        let decision = config.rules.decide(kind, &payload);
        // The only route names one destination: it is routed there or nowhere.
        assert!(decision.deliveries.len() <= 1);
    }
});
