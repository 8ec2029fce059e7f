//! What a destination is sent: method, URL, headers and body, rendered from one event.
//!
//! [`render_request`] is pure (no I/O, the clock comes in [`DeliveryIds`]) and is the only
//! way a request is built: the delivery path calls it for every attempt, and
//! `hookrouter route --render` calls it to show an operator what would be sent.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use minijinja::value::Value as TValue;
use serde_json::Value as Json;
use uuid::Uuid;

pub use crate::destination::{builtin_slack_name, Format, HeaderSpec, BUILTIN_SLACK};
use crate::destination::{show_url, Destination, Leaf, Templates, UrlView};
use crate::event::EventKind;

/// The ids and time one rendering is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryIds {
    /// The accepted event (`event_id` in templates).
    pub event_id: Uuid,
    /// The job: `delivery_id` in templates, `X-Hookrouter-Delivery` and `webhook-id`.
    pub delivery_id: Uuid,
    /// Unix seconds of the attempt, for `webhook-timestamp`.
    pub timestamp: u64,
}

impl DeliveryIds {
    /// Ids of a real attempt, stamped with the current time.
    pub fn now(event_id: Uuid, delivery_id: Uuid) -> Self {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        DeliveryIds {
            event_id,
            delivery_id,
            timestamp,
        }
    }
}

/// A request ready to send (or to print for `route --render`). Its `Debug` shows no
/// secret; print it for people with [`RenderedRequest::redacted`].
#[derive(Clone)]
pub struct RenderedRequest {
    /// `method:` of the destination.
    pub method: Method,
    /// `url:` of the destination (may hold a token: see [`RenderedRequest::redacted`]).
    pub url: reqwest::Url,
    /// The URL came from `${VAR}` or a file, so its path is not shown.
    pub url_is_secret: bool,
    /// Every header that will be sent; secret ones are marked sensitive.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl fmt::Debug for RenderedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedRequest")
            .field("method", &self.method)
            .field("url_host", &show_url(&self.url, UrlView::Host))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl RenderedRequest {
    /// The request as text for an operator: a URL that came from `${VAR}` or a file shows
    /// only its scheme and host, a query string is hidden (tokens live there), so is any
    /// userinfo (`user:password@`, credentials by definition), every sensitive header value
    /// is `<secret>`; the body is shown as is.
    pub fn redacted(&self) -> String {
        let view = UrlView::Request {
            secret_path: self.url_is_secret,
        };
        let mut out = format!("{} {}\n", self.method, show_url(&self.url, view));
        for (name, value) in &self.headers {
            let shown = if value.is_sensitive() {
                "<secret>".to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            out.push_str(&format!("{name}: {shown}\n"));
        }
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&self.body));
        out
    }
}

/// Why a request could not be rendered. The message names the field, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed (an undefined value printed or given to a filter, a bad filter
    /// argument...).
    #[error("template error in {field}: {message}")]
    Template {
        /// `template`, `body.properties.email`, `headers.X-Idempotency-Key`...
        field: String,
        /// minijinja's description.
        message: String,
    },
    /// A templated `url:` could not be rendered into a URL of the destination's host.
    #[error("url: {message}")]
    Url {
        /// What went wrong (the URL itself is not quoted).
        message: String,
    },
    /// A rendered header value is not a valid header value (a newline, for example).
    #[error("header {name}: the rendered value is not a valid header value")]
    Header {
        /// The header name.
        name: String,
    },
}

impl RenderError {
    fn template(field: &str, e: &minijinja::Error) -> RenderError {
        // minijinja knows the exact template (`body.properties.firstname`); prefer it.
        let field = match e.name() {
            Some(name) if !name.starts_with("builtin.") => name,
            _ => field,
        };
        let mut message = super::template::describe(e);
        // The cause of a typed leaf's failure (e.g. "the value is undefined") is useful.
        if let Some(source) = std::error::Error::source(e) {
            message.push_str(&format!(": {source}"));
        }
        RenderError::Template {
            field: field.to_string(),
            message,
        }
    }
}

/// The template context: the payload's top-level fields, then `event` (the kind),
/// `event_id`, `delivery_id` and `payload` (the whole object), which win over payload
/// fields of the same name.
pub fn context(kind: EventKind, payload: &Json, ids: &DeliveryIds) -> TValue {
    let mut map = match payload {
        Json::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    map.insert("event".into(), Json::String(kind.as_str().into()));
    map.insert("event_id".into(), Json::String(ids.event_id.to_string()));
    map.insert(
        "delivery_id".into(),
        Json::String(ids.delivery_id.to_string()),
    );
    map.insert("payload".into(), payload.clone());
    TValue::from(minijinja::value::Serde(Json::Object(map)))
}

/// Builds the request `dest` gets for one event: `body` is the event as received,
/// `payload` the same parsed (only read when the destination uses templates).
pub fn render_request(
    dest: &Destination,
    kind: EventKind,
    body: &Bytes,
    payload: &Json,
    ids: &DeliveryIds,
) -> Result<RenderedRequest, RenderError> {
    let templates = &dest.templates;
    let ctx = if dest.uses_templates() {
        context(kind, payload, ids)
    } else {
        TValue::UNDEFINED
    };
    let body = render_body(templates, &dest.format, kind, body, &ctx)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for spec in &dest.headers {
        let text = match &spec.value {
            Leaf::Literal(s) => s.clone(),
            Leaf::Text(name) | Leaf::Typed(name) => templates
                .render(name, &ctx)
                .map_err(|e| RenderError::template(&format!("headers.{}", spec.name), &e))?,
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| RenderError::Header {
            name: spec.name.to_string(),
        })?;
        value.set_sensitive(spec.sensitive);
        headers.insert(spec.name.clone(), value);
    }
    // `auth: bearer / basic`; an OAuth2 token is added when the request is sent.
    if let Some(value) = dest.auth.as_ref().and_then(|a| a.static_header()) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let url = match &dest.url_template {
        Some(t) => t
            .render(&ctx)
            .map_err(|message| RenderError::Url { message })?,
        None => dest.url.clone(),
    };
    headers.insert(
        "x-hookrouter-event",
        HeaderValue::from_static(kind.as_str()),
    );
    let delivery = ids.delivery_id.to_string();
    if let Ok(v) = HeaderValue::from_str(&delivery) {
        headers.insert("x-hookrouter-delivery", v);
    }
    if let Some(key) = &dest.sign {
        let signature = key.sign(&delivery, ids.timestamp, &body);
        if let (Ok(id), Ok(ts), Ok(sig)) = (
            HeaderValue::from_str(&delivery),
            HeaderValue::from_str(&ids.timestamp.to_string()),
            HeaderValue::from_str(&signature),
        ) {
            headers.insert("webhook-id", id);
            headers.insert("webhook-timestamp", ts);
            headers.insert("webhook-signature", sig);
        }
    }
    Ok(RenderedRequest {
        method: dest.method.clone(),
        url,
        url_is_secret: dest.url_is_secret,
        headers,
        body,
    })
}

fn render_body(
    templates: &Templates,
    format: &Format,
    kind: EventKind,
    raw: &Bytes,
    ctx: &TValue,
) -> Result<Bytes, RenderError> {
    let json = match format {
        Format::Raw => return Ok(raw.clone()),
        Format::Json { body } => templates
            .render_tree(body, ctx)
            .map_err(|e| RenderError::template("body", &e))?,
        // An alert to a Slack destination is its one line of text, whatever template the
        // destination has for Mindstamp's events (those fields are not in an alert).
        Format::Slack { .. } if kind == EventKind::Alert => {
            let text = serde_json::from_slice::<Json>(raw)
                .ok()
                .and_then(|alert| alert.get("text")?.as_str().map(escape_slack))
                .unwrap_or_else(|| "hookrouter alert".to_string());
            serde_json::json!({ "text": text })
        }
        Format::Slack { text, blocks } => {
            let text = match text {
                Some(name) => templates
                    .render(name, ctx)
                    .map_err(|e| RenderError::template("template", &e))?,
                None => templates
                    .render(&builtin_slack_name(kind), ctx)
                    .map_err(|e| RenderError::template("the built-in Slack message", &e))?,
            };
            let mut map = serde_json::Map::new();
            map.insert("text".into(), Json::String(text));
            if let Some(blocks) = blocks {
                let rendered = templates
                    .render_tree(blocks, ctx)
                    .map_err(|e| RenderError::template("blocks", &e))?;
                map.insert("blocks".into(), rendered);
            }
            Json::Object(map)
        }
    };
    // Serializing a serde_json::Value cannot fail.
    Ok(Bytes::from(serde_json::to_vec(&json).unwrap_or_default()))
}

/// `text` with Slack's three control characters escaped, so an error a receiver wrote
/// (`<!channel>`) cannot ping anyone.
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;
    use std::collections::HashMap;
    use std::path::Path;

    const VIEW: &str = include_str!("../../tests/fixtures/view.json");
    const INTERACTION: &str = include_str!("../../tests/fixtures/interaction.json");
    const LEAD: &str = include_str!("../../tests/fixtures/lead.json");

    fn config(destinations: &str) -> Config {
        let env = HashMap::from([("CRM_TOKEN".to_string(), "s3cret-token".to_string())]);
        let text = format!("keys: [k]\ndestinations:\n{destinations}");
        Config::from_yaml(&text, Path::new("routes.yaml"), &env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids() -> DeliveryIds {
        DeliveryIds {
            event_id: Uuid::from_u128(1),
            delivery_id: Uuid::from_u128(2),
            timestamp: 1_700_000_000,
        }
    }

    fn render(
        c: &Config,
        dest: &str,
        kind: EventKind,
        body: &str,
    ) -> Result<RenderedRequest, RenderError> {
        let payload: Json = serde_json::from_str(body).unwrap();
        render_request(
            &c.destinations[dest],
            kind,
            &Bytes::from(body.to_string()),
            &payload,
            &ids(),
        )
    }

    fn json_body(r: &RenderedRequest) -> Json {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn raw_is_byte_for_byte_and_built_in_slack_messages_fit_each_kind() {
        let c = config(
            "  raw:\n    url: http://h/raw\n  slack:\n    url: http://h/s\n    format: slack\n",
        );
        let r = render(&c, "raw", EventKind::View, VIEW).unwrap();
        assert_eq!(r.body, VIEW.as_bytes());
        let text = |kind, body| json_body(&render(&c, "slack", kind, body).unwrap());
        assert_eq!(
            text(EventKind::View, VIEW),
            json!({"text": "🇺🇸 *John Doe* watched *Interactive Video #9* (95%)"})
        );
        assert_eq!(
            text(EventKind::Interaction, INTERACTION),
            json!({"text": "*John Doe* answered \u{201c}How can you get a good night's sleep?\u{201d} with *D. All of the Above* in *Interactive Video #9*"})
        );
        assert_eq!(
            text(EventKind::Lead, LEAD),
            json!({"text": "New lead: *John Doe* (john.doe@example.com) from *Interactive Video #9*"})
        );
        // Built-ins never fail on a sparse payload.
        assert_eq!(
            text(EventKind::View, "{}"),
            json!({"text": "*Someone* watched *a video*"})
        );
        assert_eq!(
            text(
                EventKind::Interaction,
                r#"{"viewer_name": null, "value": "<b>"}"#
            ),
            json!({"text": "*Someone* clicked *&lt;b&gt;* in *a video*"})
        );
        assert_eq!(
            text(EventKind::Lead, "{}"),
            json!({"text": "New lead: *(no name)* from *a video*"})
        );
    }

    #[test]
    fn a_crm_body_keeps_types_and_headers_are_rendered_and_redacted() {
        let c = config(
            r#"  crm:
    url: https://api.hubapi.com/crm/v3/objects/contacts
    headers:
      Authorization: "Bearer ${CRM_TOKEN}"
      X-Idempotency-Key: "{{ id }}"
      X-Source: "{{ event }}/{{ event_id }}"
    format: json
    body:
      properties:
        email: "{{ viewer_email }}"
        firstname: "{{ viewer_name | split(' ') | first }}"
        mindstamp_percentage: "{{ percentage }}"
        tags: ["{{ tag1 }}", "{{ tag2 }}"]
        source: mindstamp
"#,
        );
        let r = render(&c, "crm", EventKind::View, VIEW).unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(
            json_body(&r),
            json!({"properties": {"email": "john.doe@example.com", "firstname": "John", "mindstamp_percentage": 95, "tags": ["spring-campaign", null], "source": "mindstamp"}})
        );
        assert_eq!(r.headers["authorization"], "Bearer s3cret-token");
        assert_eq!(
            r.headers["x-idempotency-key"],
            "9bce33d1-120c-4bb5-8b5a-499896140f20"
        );
        assert_eq!(
            r.headers["x-source"],
            format!("view/{}", Uuid::from_u128(1))
        );
        assert_eq!(r.headers["content-type"], "application/json");
        let shown = r.redacted();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("authorization: <secret>"), "{shown}");
        assert!(shown.contains("x-idempotency-key: 9bce33d1"), "{shown}");
        assert!(
            shown.starts_with("POST https://api.hubapi.com/crm/v3/objects/contacts\n"),
            "{shown}"
        );
    }

    #[test]
    fn a_render_failure_names_the_field_and_signing_adds_standard_headers() {
        let c = config(
            r#"  crm:
    url: "http://h/${CRM_TOKEN}/x?token=abc"
    method: put
    sign: { secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" }
    format: json
    body:
      first: "{{ missing | split(' ') | first }}"
"#,
        );
        let err = render(&c, "crm", EventKind::Lead, LEAD)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("template error in body.first: "), "{err}");
        let r = render(&c, "crm", EventKind::Lead, r#"{"missing": "Ada Lovelace"}"#).unwrap();
        assert_eq!(r.method, Method::PUT);
        assert_eq!(json_body(&r), json!({"first": "Ada"}));
        let id = Uuid::from_u128(2).to_string();
        assert_eq!(r.headers["webhook-id"], id.as_str());
        assert_eq!(r.headers["webhook-timestamp"], "1700000000");
        let expected =
            crate::deliver::sign::SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
                .unwrap()
                .sign(&id, 1_700_000_000, &r.body);
        assert_eq!(r.headers["webhook-signature"], expected.as_str());
        let shown = r.redacted();
        assert!(
            !shown.contains("s3cret") && !shown.contains("abc"),
            "{shown}"
        );
    }

    /// The complete examples in the README's destinations reference load, and the HubSpot one sends what
    /// the document says it sends.
    #[test]
    fn the_documented_examples_are_valid_and_render_as_documented() {
        let doc = include_str!("../../README.md");
        let env = HashMap::from(
            [
                ("MINDSTAMP_WEBHOOK_KEY", "k"),
                (
                    "SLACK_WEBHOOK_URL",
                    "https://hooks.slack.com/services/T0/B0/X",
                ),
                (
                    "SLACK_LEADS_WEBHOOK_URL",
                    "https://hooks.slack.com/services/T0/B1/Y",
                ),
                ("HUBSPOT_TOKEN", "pat-secret"),
                (
                    "WAREHOUSE_SIGNING_SECRET",
                    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                ),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let examples: Vec<&str> = doc
            .split("```yaml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.starts_with("# Complete example"))
            .collect();
        assert_eq!(examples.len(), 2);
        let mut configs = Vec::new();
        for text in examples {
            let c = Config::from_yaml(text, Path::new("docs.yaml"), &env)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            configs.push(c);
        }
        let slack = render(&configs[0], "sales-slack", EventKind::View, VIEW).unwrap();
        assert_eq!(
            json_body(&slack)["text"],
            "🇺🇸 *John Doe* watched *Interactive Video #9* (95%)"
        );
        let hubspot = render(&configs[1], "hubspot-contacts", EventKind::View, VIEW).unwrap();
        let shown = String::from_utf8_lossy(&hubspot.body).into_owned();
        assert!(doc.contains(&format!("\n{shown}\n")), "{shown}");
        let lead = render(&configs[1], "hubspot-leads", EventKind::Lead, LEAD).unwrap();
        assert_eq!(json_body(&lead)["properties"]["lastname"], "Doe");
    }
}
