//! `destinations:` validated into [`Destination`]s: URL, method, headers, format and its
//! templates (compiled here, so a template syntax error is a config problem with its line),
//! pacing, classification rules, `max_age` and signing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use serde_yaml::Value;

use super::raw::{RawDestination, StatusItem};
use super::{deserialize_at, duration_or, validate_retry, Ctx, Destination, Problems};
use crate::destination::template::is_template;
use crate::destination::AuthSpec;
use crate::destination::{
    builtin_slack_name, Classifier, Format, HeaderSpec, Leaf, RateLimit, SigningKey, StatusSet,
    Templates, UrlTemplate, BUILTIN_SLACK,
};
use crate::health::HealthPolicy;
use crate::retry::RetryPolicy;

/// Validates every destination; the invalid ones are left out (and reported).
pub(super) fn validate_all(
    value: Option<&Value>,
    retry: &RetryPolicy,
    health: &HealthPolicy,
    ctx: &mut Ctx<'_>,
) -> BTreeMap<String, Arc<Destination>> {
    let mut out = BTreeMap::new();
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return out;
    };
    let Some(map) = value.as_mapping() else {
        ctx.problems
            .push("destinations", "expected a mapping of destination names");
        return out;
    };
    for (key, dvalue) in map {
        let Some(name) = key.as_str() else {
            ctx.problems
                .push("destinations", "destination names must be strings");
            continue;
        };
        let path = format!("destinations.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            ctx.problems.push(
                &path,
                "a destination name may only use letters, digits, '-', '_' and '.'",
            );
            continue;
        }
        let Some(raw) = deserialize_at::<RawDestination>(dvalue, &path, ctx.problems) else {
            continue;
        };
        let digest = digest(dvalue);
        if let Some(dest) = validate_one(name, raw, retry, health, &path, ctx, digest) {
            out.insert(name.to_string(), Arc::new(dest));
        }
    }
    out
}

fn digest(value: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_yaml::to_string(value)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

fn validate_one(
    name: &str,
    raw: RawDestination,
    retry: &RetryPolicy,
    health: &HealthPolicy,
    path: &str,
    ctx: &mut Ctx<'_>,
    source_digest: u64,
) -> Option<Destination> {
    let problems = &mut *ctx.problems;
    let (url, url_template) = validate_target(&raw.url, path, problems);
    let auth = validate_auth(&raw, path, problems);
    let method = validate_method(raw.method.as_deref(), path, problems);
    let mut templates = Templates::new();
    let headers = validate_headers(&raw, path, ctx.secrets, &mut templates, ctx.problems);
    let problems = &mut *ctx.problems;
    let format = validate_format(&raw, path, &mut templates, problems);
    let timeout = duration_or(
        raw.timeout.as_ref(),
        Duration::from_secs(10),
        &format!("{path}.timeout"),
        problems,
    );
    let health = match &raw.health {
        Some(h) => super::health::validate_health(health, h, &format!("{path}.health"), problems),
        None => health.clone(),
    };
    let retry = match &raw.retry {
        Some(r) => validate_retry(retry, r, &format!("{path}.retry"), problems),
        None => retry.clone(),
    };
    let (concurrency, rate_limit) = validate_pace(&raw, path, problems);
    let classify = validate_classifier(&raw, path, problems);
    let max_age = validate_max_age(&raw, path, problems);
    let sign = raw
        .sign
        .as_ref()
        .and_then(|s| match SigningKey::parse(&s.secret) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(&format!("{path}.sign.secret"), e.to_string());
                None
            }
        });
    Some(Destination {
        name: name.to_string(),
        url: url?,
        url_template,
        auth: auth.map(Arc::new),
        url_is_secret: ctx.secrets.contains(&format!("{path}.url")),
        method,
        headers,
        format: format?,
        templates,
        timeout,
        concurrency,
        rate_limit,
        retry,
        classify,
        max_age,
        sign,
        health,
        source_digest,
    })
}

/// `url:`: a fixed URL, or a template with its fixed part (scheme to first template).
fn validate_target(
    raw: &str,
    path: &str,
    problems: &mut Problems,
) -> (Option<reqwest::Url>, Option<UrlTemplate>) {
    match UrlTemplate::compile(raw) {
        Ok(Some(t)) => (Some(t.base().clone()), Some(t)),
        Ok(None) => (validate_url(raw, path, problems), None),
        Err(e) => {
            if !problems.has(&format!("{path}.url")) {
                problems.push(&format!("{path}.url"), e);
            }
            (None, None)
        }
    }
}

/// `auth:`, which an `Authorization` header of the destination would contradict.
fn validate_auth(raw: &RawDestination, path: &str, problems: &mut Problems) -> Option<AuthSpec> {
    let auth = super::auth::validate_auth(raw.auth.as_ref(), &format!("{path}.auth"), problems);
    if auth.is_some()
        && raw
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("authorization"))
    {
        problems.push(
            &format!("{path}.auth"),
            "auth: and an Authorization header cannot both be set; keep one",
        );
    }
    auth
}

/// `concurrency:` (default 8) and `rate_limit:`.
fn validate_pace(
    raw: &RawDestination,
    path: &str,
    problems: &mut Problems,
) -> (usize, Option<RateLimit>) {
    let concurrency = raw.concurrency.unwrap_or(8);
    if concurrency == 0 || concurrency > 1024 {
        problems.push(&format!("{path}.concurrency"), "must be between 1 and 1024");
    }
    let rate_limit = raw
        .rate_limit
        .as_deref()
        .and_then(|r| match RateLimit::parse(r) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(&format!("{path}.rate_limit"), e);
                None
            }
        });
    (concurrency, rate_limit)
}

/// `max_age:`, above zero when set.
fn validate_max_age(raw: &RawDestination, path: &str, problems: &mut Problems) -> Option<Duration> {
    let max_age = raw.max_age.as_ref().map(|_| {
        duration_or(
            raw.max_age.as_ref(),
            Duration::MAX,
            &format!("{path}.max_age"),
            problems,
        )
    });
    if max_age.is_some_and(|d| d.is_zero()) {
        problems.push(&format!("{path}.max_age"), "must be greater than zero");
    }
    max_age
}

fn validate_url(raw: &str, path: &str, problems: &mut Problems) -> Option<reqwest::Url> {
    if problems.has(&format!("{path}.url")) {
        // Its variable is unset or its file unreadable: that is the problem to report.
        return None;
    }
    match reqwest::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
        // Never echo the URL: Slack webhook URLs are secrets.
        Ok(_) => {
            problems.push(
                &format!("{path}.url"),
                "expected an http:// or https:// URL",
            );
            None
        }
        Err(e) => {
            problems.push(&format!("{path}.url"), format!("not a valid URL ({e})"));
            None
        }
    }
}

fn validate_method(raw: Option<&str>, path: &str, problems: &mut Problems) -> Method {
    let Some(raw) = raw else {
        return Method::POST;
    };
    match raw.trim().to_ascii_uppercase().as_str() {
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "GET" => Method::GET,
        _ => {
            problems.push(
                &format!("{path}.method"),
                format!("expected POST, PUT, PATCH, DELETE or GET, found {raw:?}"),
            );
            Method::POST
        }
    }
}

fn validate_headers(
    raw: &RawDestination,
    path: &str,
    secrets: &std::collections::HashSet<String>,
    templates: &mut Templates,
    problems: &mut Problems,
) -> Vec<HeaderSpec> {
    let mut headers = Vec::new();
    for (k, v) in &raw.headers {
        let hpath = format!("{path}.headers.{k}");
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            problems.push(&hpath, "not a valid header name");
            continue;
        };
        let secret = secrets.contains(&hpath);
        let value = if is_template(v) {
            let tname = format!("headers.{k}");
            if let Err(e) = templates.add(&tname, v) {
                let shown = if secret {
                    "template syntax error (the value is not shown: it holds a secret)".into()
                } else {
                    e
                };
                problems.push(&hpath, shown);
                continue;
            }
            Leaf::Text(tname)
        } else {
            if HeaderValue::from_str(v).is_err() {
                problems.push(&hpath, "not a valid header value (control characters?)");
                continue;
            }
            Leaf::Literal(v.clone())
        };
        // A fixed value written in the file is where tokens usually are: treat it as
        // secret. A template (an idempotency key...) is shown unless it came from ${VAR}.
        let sensitive = secret || matches!(value, Leaf::Literal(_));
        headers.push(HeaderSpec {
            name,
            value,
            sensitive,
        });
    }
    headers
}

/// `format: slack`: its `template:` (or the built-in message of each kind) and `blocks:`;
/// problems inside the blocks tree go to `tree_problems`, relative to the destination.
fn validate_slack(
    raw: &RawDestination,
    path: &str,
    templates: &mut Templates,
    problems: &mut Problems,
    tree_problems: &mut Vec<(String, String)>,
) -> Format {
    let text = raw
        .template
        .as_ref()
        .and_then(|t| match templates.add("template", t) {
            Ok(()) => Some("template".to_string()),
            Err(e) => {
                problems.push(&format!("{path}.template"), e);
                None
            }
        });
    if raw.template.is_none() {
        for (kind, source) in BUILTIN_SLACK {
            // The built-ins are tested; a failure here is a bug worth reporting.
            if let Err(e) = templates.add(&builtin_slack_name(kind), source) {
                problems.push(
                    &format!("{path}.format"),
                    format!("built-in {kind} message: {e}"),
                );
            }
        }
    }
    let blocks = match &raw.blocks {
        None => None,
        Some(b @ Value::Sequence(_)) => Some(templates.tree("blocks", b, tree_problems)),
        Some(_) => {
            problems.push(
                &format!("{path}.blocks"),
                "expected a list of Block Kit blocks",
            );
            None
        }
    };
    Format::Slack { text, blocks }
}

fn validate_format(
    raw: &RawDestination,
    path: &str,
    templates: &mut Templates,
    problems: &mut Problems,
) -> Option<Format> {
    let format = raw.format.as_deref().unwrap_or("raw");
    let mut tree_problems = Vec::new();
    let only_for = |field: &str, fmt: &str, problems: &mut Problems| {
        problems.push(
            &format!("{path}.{field}"),
            format!("{field} is only used with format: {fmt}"),
        );
    };
    let result = match format {
        "raw" => Some(Format::Raw),
        "slack" => Some(validate_slack(
            raw,
            path,
            templates,
            problems,
            &mut tree_problems,
        )),
        "json" => match &raw.body {
            Some(body) => Some(Format::Json {
                body: templates.tree("body", body, &mut tree_problems),
            }),
            None => {
                problems.push(
                    &format!("{path}.format"),
                    "format: json needs a body: (the JSON to send, as YAML)",
                );
                None
            }
        },
        other => {
            problems.push(
                &format!("{path}.format"),
                format!("expected raw, slack or json, found {other:?}"),
            );
            None
        }
    };
    if format != "slack" {
        if raw.template.is_some() {
            only_for("template", "slack", problems);
        }
        if raw.blocks.is_some() {
            only_for("blocks", "slack", problems);
        }
    }
    if format != "json" && raw.body.is_some() {
        only_for("body", "json", problems);
    }
    for (p, message) in tree_problems {
        problems.push(&format!("{path}.{p}"), message);
    }
    result
}

fn status_set(items: &[StatusItem], path: &str, problems: &mut Problems) -> StatusSet {
    let mut set = StatusSet::empty();
    for (i, item) in items.iter().enumerate() {
        let text = match item {
            StatusItem::Code(c) => c.to_string(),
            StatusItem::Text(t) => t.clone(),
        };
        if let Err(e) = set.add(&text) {
            problems.push(&format!("{path}.{i}"), e);
        }
    }
    set
}

fn validate_classifier(raw: &RawDestination, path: &str, problems: &mut Problems) -> Classifier {
    let retry_on = match &raw.retry_on {
        None => StatusSet::default(),
        Some(items) => status_set(items, &format!("{path}.retry_on"), problems),
    };
    // `success_on: [409]`: a receiver's "already exists" is what an upsert wants.
    let success_on = raw
        .success_on
        .as_deref()
        .map(|items| status_set(items, &format!("{path}.success_on"), problems));
    let regex = |field: &str, value: &Option<String>, problems: &mut Problems| {
        let pattern = value.as_deref()?;
        match Regex::new(pattern) {
            Ok(r) => Some(r),
            Err(e) => {
                let fpath = format!("{path}.{field}");
                let detail = crate::lint::regex_error(&e, problems.secret_origin(&fpath).is_none());
                problems.push(&fpath, format!("not a valid regular expression: {detail}"));
                None
            }
        }
    };
    Classifier {
        retry_on,
        success_on,
        permanent_if_body: regex("permanent_if_body", &raw.permanent_if_body, problems),
        retry_if_body: regex("retry_if_body", &raw.retry_if_body, problems),
    }
}

#[cfg(test)]
#[path = "destination_tests.rs"]
mod tests;
