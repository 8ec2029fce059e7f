//! The README's CRM recipes, loaded from the README as written: each is a valid config,
//! renders what the CRM expects (with safe name splitting for one-word and missing names),
//! and the Salesforce one upserts with PATCH and OAuth refresh against loopback stand-ins.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::common::{fixture_json, Receiver, Reply, TestDaemon, KEY};
use bytes::Bytes;
use hookrouter::config::{Config, Env};
use hookrouter::deliver::{render_request, DeliveryIds};
use hookrouter::event::EventKind;
use serde_json::{json, Value};
use uuid::Uuid;

/// Every `# Recipe:` YAML block of the README, by the word after `Recipe:`.
fn recipes() -> HashMap<String, String> {
    let readme = include_str!("../../README.md");
    readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("# Recipe: "))
        .map(|b| {
            let name = b["# Recipe: ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_lowercase();
            (name, b.to_string())
        })
        .collect()
}

/// The recipes' variables and the Pipedrive token file.
struct RecipeEnv {
    vars: HashMap<String, String>,
    pipedrive_file: String,
}

impl Env for RecipeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
}

fn env(dir: &Path) -> RecipeEnv {
    let file = dir.join("pipedrive_token");
    std::fs::write(&file, "pd-api-token\n").unwrap();
    let vars = [
        ("MINDSTAMP_WEBHOOK_KEY", KEY),
        ("HUBSPOT_TOKEN", "pat-na1-secret"),
        ("SALESFORCE_DOMAIN", "example.my.salesforce.com"),
        ("SALESFORCE_CLIENT_ID", "sf-client"),
        ("SALESFORCE_CLIENT_SECRET", "sf-secret"),
        ("SALESFORCE_REFRESH_TOKEN", "sf-refresh"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    RecipeEnv {
        vars,
        pipedrive_file: file.display().to_string(),
    }
}

/// `text` with the Pipedrive credential path pointed at the test's file.
fn load(text: &str, env: &RecipeEnv) -> Config {
    let text = text.replace(
        "/run/credentials/hookrouter/pipedrive_token",
        &env.pipedrive_file,
    );
    let c = Config::from_yaml(&text, Path::new("README.md"), env)
        .unwrap_or_else(|e| panic!("a README recipe is invalid:\n{e}\n{text}"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    c
}

fn render(c: &Config, dest: &str, lead: &Value) -> hookrouter::deliver::RenderedRequest {
    let body = Bytes::from(lead.to_string());
    let ids = DeliveryIds {
        event_id: Uuid::from_u128(1),
        delivery_id: Uuid::from_u128(2),
        timestamp: 1_700_000_000,
    };
    render_request(&c.destinations[dest], EventKind::Lead, &body, lead, &ids)
        .unwrap_or_else(|e| panic!("{dest}: {e}"))
}

fn body(r: &hookrouter::deliver::RenderedRequest) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn named(name: Value) -> Value {
    let mut lead = fixture_json("lead.json");
    lead["name"] = name;
    lead
}

#[test]
fn every_recipe_loads_and_renders_what_its_crm_expects() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let all = recipes();
    let mut names: Vec<&str> = all.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["hubspot", "pipedrive", "salesforce"]);

    let hubspot = load(&all["hubspot"], &env);
    let r = render(&hubspot, "hubspot", &fixture_json("lead.json"));
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(
        r.url.as_str(),
        "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
    );
    assert_eq!(r.headers["authorization"], "Bearer pat-na1-secret");
    assert_eq!(
        body(&r),
        json!({"inputs": [{"idProperty": "email", "id": "john.doe@example.com", "properties": {
            "email": "john.doe@example.com", "firstname": "John", "lastname": "Doe", "phone": "(321) 123-4567"}}]})
    );
    let split = |name: Value| {
        let b = body(&render(&hubspot, "hubspot", &named(name)));
        let p = &b["inputs"][0]["properties"];
        (p["firstname"].clone(), p["lastname"].clone())
    };
    assert_eq!(split(json!("Cher")), (json!("Cher"), json!("")));
    assert_eq!(
        split(json!("Ada  Lovelace King")),
        (json!("Ada"), json!("Lovelace King"))
    );
    assert_eq!(split(json!(null)), (json!(""), json!("")));

    let salesforce = load(&all["salesforce"], &env);
    let mut lead = fixture_json("lead.json");
    lead["id"] = json!("c1a7/e0f4 x");
    let r = render(&salesforce, "salesforce", &lead);
    assert_eq!(r.method, http::Method::PATCH);
    assert_eq!(
        r.url.as_str(),
        "https://example.my.salesforce.com/services/data/v60.0/sobjects/Lead/Mindstamp_Id__c/c1a7%2Fe0f4%20x"
    );
    assert!(
        r.headers.get("authorization").is_none(),
        "the OAuth token is added when sent"
    );
    let b = body(&r);
    assert_eq!(
        (b["FirstName"].clone(), b["LastName"].clone()),
        (json!("John"), json!("Doe"))
    );
    assert_eq!(b["LeadSource"], "Mindstamp");
    let split = |name: Value| {
        let b = body(&render(&salesforce, "salesforce", &named(name)));
        (b["FirstName"].clone(), b["LastName"].clone())
    };
    assert_eq!(split(json!("Cher")), (json!(""), json!("Cher")));
    assert_eq!(split(json!("")), (json!(""), json!("Unknown")));

    let pipedrive = load(&all["pipedrive"], &env);
    let r = render(&pipedrive, "pipedrive", &named(json!("")));
    assert_eq!(r.headers["x-api-token"], "pd-api-token");
    assert!(r.headers["x-api-token"].is_sensitive());
    let b = body(&r);
    assert_eq!(b["name"], "john.doe@example.com", "no name: the email");
    assert_eq!(b["email"][0]["value"], "john.doe@example.com");
    let shown = r.redacted();
    assert!(!shown.contains("pd-api-token"), "{shown}");
}

/// The Salesforce recipe for real: its token endpoint and instance replaced by loopback
/// receivers, a lead is upserted with PATCH under a refreshed token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_recipe_upserts_with_patch_and_an_oauth_refresh() {
    let instance = Receiver::start().await;
    let login = Receiver::start().await;
    login.set_default(
        Reply::status(200)
            .header("content-type", "application/json")
            .body(r#"{"access_token":"00Dxx!session","instance_url":"https://example.my.salesforce.com","token_type":"Bearer","issued_at":"1700000000000"}"#),
    );
    instance.script([
        // The session expired: refreshed and sent once more.
        Reply::status(401)
            .body(r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#),
        Reply::status(201).body(r#"{"id":"00Q000000000001","success":true,"created":true}"#),
    ]);
    let recipe = recipes()["salesforce"]
        .replace(
            "https://login.salesforce.com/services/oauth2/token",
            &login.url("/services/oauth2/token"),
        )
        .replace("https://${SALESFORCE_DOMAIN}", &instance.url(""))
        .replace("keys: [\"${MINDSTAMP_WEBHOOK_KEY}\"]\n", "")
        .replace("\"${SALESFORCE_CLIENT_ID}\"", "sf-client")
        .replace("\"${SALESFORCE_CLIENT_SECRET}\"", "sf-secret")
        .replace("\"${SALESFORCE_REFRESH_TOKEN}\"", "sf-refresh");
    let d = TestDaemon::start(&recipe).await;
    let (status, answer) = d
        .post("lead", Some(KEY), fixture_json("lead.json").to_string())
        .await;
    assert_eq!(status, 200, "{answer}");
    let got = instance.wait_for(2, Duration::from_secs(15)).await;
    for r in &got {
        assert_eq!(r.method, "PATCH");
        assert_eq!(
            r.path,
            "/services/data/v60.0/sobjects/Lead/Mindstamp_Id__c/c1a7e0f4-5b2d-4e8a-9f31-7d6b2a4c8e10"
        );
        assert_eq!(r.header("authorization"), "Bearer 00Dxx!session");
    }
    let fetches = login.requests();
    assert_eq!(fetches.len(), 2, "one fetch, one refresh after the 401");
    let form = String::from_utf8_lossy(&fetches[1].body).into_owned();
    assert_eq!(
        form,
        "grant_type=refresh_token&refresh_token=sf-refresh&client_id=sf-client&client_secret=sf-secret"
    );
    let sent: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(sent["LastName"], "Doe");
}

/// `hookrouter route --render` shows the Salesforce recipe's request: PATCH to the encoded
/// URL, an Authorization header (the OAuth token, as `<secret>`) and the body.
#[test]
fn route_render_shows_the_salesforce_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, &recipes()["salesforce"]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrouter"))
        .args(["route", "--event", "lead", "--render", "--config"])
        .arg(&path)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lead.json"))
        .env_remove("HOOKROUTER_CONFIG")
        .envs([
            ("MINDSTAMP_WEBHOOK_KEY", KEY),
            ("SALESFORCE_DOMAIN", "example.my.salesforce.com"),
            ("SALESFORCE_CLIENT_ID", "sf-client"),
            ("SALESFORCE_CLIENT_SECRET", "sf-secret"),
            ("SALESFORCE_REFRESH_TOKEN", "sf-refresh"),
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("PATCH https://example.my.salesforce.com/"),
        "{shown}"
    );
    assert!(shown.contains("authorization: <secret>"), "{shown}");
    assert!(shown.contains(r#""LastName":"Doe""#), "{shown}");
    assert!(
        !shown.contains("sf-secret") && !shown.contains("sf-refresh"),
        "{shown}"
    );
}
