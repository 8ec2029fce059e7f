//! Fuzzes `Config::from_yaml`: any text must give a config or a located error, never a
//! panic, a hang or unbounded memory.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `{ file: PATH }` reads files: keep the fuzzer away from endless ones (/dev/zero),
    // which only an operator could name and which are not what this target is about.
    if text.contains("/dev") || text.contains("/proc") || text.contains("/sys") {
        return;
    }
    let mut env = HashMap::new();
    env.insert("KEY".to_string(), "fuzz-key".to_string());
    env.insert("TOKEN".to_string(), "t0ken".to_string());
    match hookrouter::config::Config::from_yaml(text, Path::new("fuzz.yaml"), &env) {
        Ok(config) => {
            // A config that validated must be usable: route every sample kind once.
            let payload = serde_json::json!({"id": "x", "percentage": 50, "video_token": "t"});
            for kind in hookrouter::event::EventKind::ALL {
                let _ = config.rules.decide(kind, &payload);
            }
        }
        Err(e) => {
            // Rendering the error (what an operator reads) must not panic either.
            let _ = e.to_string();
        }
    }
});
