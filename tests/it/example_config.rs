//! The repo's own routes.yaml is a working example: it must parse and validate as shipped.

use std::path::Path;

use hookrouter::config::Config;

#[test]
fn the_repository_routes_yaml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    // No environment needed: every variable has a development default.
    let env = std::collections::HashMap::<String, String>::new();
    let config = Config::from_yaml(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert!(
        config.destinations.contains_key("sales-slack") && config.destinations.contains_key("crm")
    );
    let names: Vec<&str> = config
        .rules
        .routes()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["engaged-viewers", "every-lead", "quiz-answers"]);

    // The quick start's sample view fires the engaged-viewers route.
    let view: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/view.json")).unwrap(),
    )
    .unwrap();
    let decision = config
        .rules
        .decide(hookrouter::event::EventKind::View, &view);
    assert_eq!(decision.routes, ["engaged-viewers"]);
    assert_eq!(decision.deliveries.len(), 2);

    // In production the key comes from the environment.
    let env = std::collections::HashMap::from([(
        "MINDSTAMP_WEBHOOK_KEY".to_string(),
        "prod".to_string(),
    )]);
    assert!(Config::from_yaml(&text, &path, &env).is_ok());
}
