//! Fuzzes destination templates: input is `TEMPLATE \0 PAYLOAD_JSON`. The template is
//! compiled as one string leaf of a destination (literal, text or single typed expression)
//! and rendered with the context a delivery gets. Compiling may refuse and rendering may
//! fail (a dead letter), but neither may panic.
#![no_main]

use hookrouter::deliver::format::{context, DeliveryIds};
use hookrouter::deliver::template::Templates;
use hookrouter::event::EventKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(source), Some(payload)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    // Loops over `range()` are the operator's own cost (a template is config, not input):
    // keep the fuzzer on what payloads can reach.
    if source.contains("range") {
        return;
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    let mut templates = Templates::new();
    let Ok(leaf) = templates.leaf("body.text", source) else {
        return;
    };
    let ids = DeliveryIds {
        event_id: uuid::Uuid::nil(),
        delivery_id: uuid::Uuid::nil(),
        timestamp: 0,
    };
    for kind in EventKind::ALL {
        let ctx = context(kind, &payload, &ids);
        let _ = templates.render_leaf(&leaf, &ctx);
    }
});
