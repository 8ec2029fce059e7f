//! `hookrouter check` and `hookrouter route`: read-only views of a config for the operator,
//! built on the same loading and matching code as `serve`, so what they say is what the
//! daemon will do. Neither prints a secret: destinations show only scheme and host, headers
//! only their names, and conditions whose operands came from `${VAR}` show `<secret>`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value as Json;

use crate::config::{Config, Destination};
use crate::destination::{show_url, UrlView};
use crate::event::EventKind;
use crate::route::explain::{render_explanation, RouteExplanation};
use crate::route::Decision;

/// The part of a destination URL that is safe to print: Slack and many CRMs put tokens in
/// the path or query ([`UrlView::Origin`]).
pub fn safe_url(dest: &Destination) -> String {
    show_url(&dest.url, UrlView::Origin)
}

/// `check`'s summary: keys count, destinations, and each route with its conditions on one line.
pub fn check_summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", config.source.display());
    let _ = writeln!(
        out,
        "listen: {}   data_dir: {}",
        config.server.listen,
        config.server.data_dir.display()
    );
    let _ = writeln!(out, "keys: {} accepted X-KEY value(s)", config.keys.len());
    let _ = writeln!(out, "destinations ({}):", config.destinations.len());
    let width = config
        .destinations
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (name, d) in &config.destinations {
        let headers: Vec<&str> = d.headers.iter().map(|h| h.name.as_str()).collect();
        let r = &d.retry;
        let mut extras = Vec::new();
        if let Some(rate) = &d.rate_limit {
            extras.push(format!(
                "rate {}/{}",
                rate.count,
                humantime::format_duration(rate.per)
            ));
        }
        if let Some(age) = d.max_age {
            extras.push(format!("max_age {}", humantime::format_duration(age)));
        }
        if d.sign.is_some() {
            extras.push("signed".to_string());
        }
        if let Some(auth) = &d.auth {
            extras.push(format!("auth {}", auth.kind()));
        }
        if !headers.is_empty() {
            extras.push(format!("headers: {}", headers.join(", ")));
        }
        let _ = writeln!(
            out,
            "  {name:width$}  {} {}  format {}  timeout {}  concurrency {}  retry {}×{} up to {} for {}{}{}",
            d.method,
            safe_url(d),
            d.format,
            humantime::format_duration(d.timeout),
            d.concurrency,
            humantime::format_duration(r.initial_interval),
            r.multiplier,
            humantime::format_duration(r.max_interval),
            humantime::format_duration(r.max_elapsed),
            if extras.is_empty() { "" } else { "  " },
            extras.join("  "),
        );
    }
    let routes = config.rules.routes();
    let _ = writeln!(out, "routes ({}):", routes.len());
    let width = routes.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in routes {
        let kinds = match &r.events {
            None => "any".to_string(),
            Some(k) => k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join("|"),
        };
        let _ = writeln!(
            out,
            "  {:width$}  [{kinds}]  {}  -> {}{}",
            r.name,
            r.condition,
            r.to.join(", "),
            if r.stop { "  (stop)" } else { "" }
        );
    }
    out
}

/// `check --json`: `ok`, every error and warning with its place, and (when the config
/// loaded) the destinations and routes by name.
pub fn check_json(
    path: &std::path::Path,
    loaded: &Result<Config, crate::config::ConfigError>,
) -> Json {
    use crate::config::{ConfigError, LocatedProblem};
    let item = |p: &LocatedProblem| {
        serde_json::json!({
            "file": p.file,
            "line": p.position.map(|p| p.line),
            "col": p.position.map(|p| p.col),
            "label": p.label,
            "message": p.message,
        })
    };
    type Lists = (Vec<Json>, Vec<Json>, Vec<String>, Vec<String>);
    let (errors, warnings, destinations, routes): Lists = match loaded {
        Ok(c) => (
            Vec::new(),
            c.warnings.iter().map(item).collect(),
            c.destinations.keys().cloned().collect(),
            c.rules.routes().iter().map(|r| r.name.clone()).collect(),
        ),
        Err(e) => {
            let errors = match e {
                ConfigError::Invalid { problems } => problems.iter().map(item).collect(),
                ConfigError::Syntax {
                    file,
                    line,
                    col,
                    message,
                } => vec![serde_json::json!({
                    "file": file, "line": line, "col": col, "label": null, "message": message,
                })],
                ConfigError::Read { path, source } => vec![serde_json::json!({
                    "file": path, "line": null, "col": null, "label": null,
                    "message": source.to_string(),
                })],
            };
            (errors, Vec::new(), Vec::new(), Vec::new())
        }
    };
    serde_json::json!({
        "file": path.display().to_string(),
        "ok": loaded.is_ok(),
        "errors": errors,
        "warnings": warnings,
        "destinations": destinations,
        "routes": routes,
    })
}

/// The dry run's result: what `serve` would do with one payload.
#[derive(Debug, Serialize)]
pub struct RouteReport {
    /// The event kind given.
    pub event: EventKind,
    /// Matching routes, in order.
    pub routes: Vec<String>,
    /// Destinations that would receive it, with the routes that send it there.
    pub deliveries: Vec<ReportDelivery>,
    /// Per-route reasons (with `--explain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<ExplainedRoute>>,
    /// The requests that would be sent (with `--render`), secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendered: Option<Vec<RenderedDelivery>>,
}

/// One destination's request as `--render` shows it.
#[derive(Debug, Serialize)]
pub struct RenderedDelivery {
    /// Destination name.
    pub destination: String,
    /// Method, URL, headers and body, with secrets replaced by `<secret>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Why the request could not be rendered (the job would be dead-lettered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Renders the request each destination of `report` would receive, as delivery would.
pub fn render_deliveries(
    config: &Config,
    report: &mut RouteReport,
    body: &bytes::Bytes,
    payload: &Json,
) {
    let ids = crate::deliver::DeliveryIds::now(uuid::Uuid::nil(), uuid::Uuid::nil());
    let rendered = report
        .deliveries
        .iter()
        .map(|d| {
            let result = match config.destinations.get(&d.destination) {
                Some(dest) => {
                    crate::deliver::render_request(dest, report.event, body, payload, &ids)
                        .map(|mut r| {
                            // The OAuth token is fetched when sent: show that one goes.
                            if let Some(crate::auth::AuthSpec::OAuth2(_)) = dest.auth.as_deref() {
                                let mut v = http::HeaderValue::from_static("Bearer (oauth2)");
                                v.set_sensitive(true);
                                r.headers.insert(http::header::AUTHORIZATION, v);
                            }
                            r.redacted()
                        })
                        .map_err(|e| e.to_string())
                }
                None => Err("destination not configured".to_string()),
            };
            let (request, error) = match result {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            };
            RenderedDelivery {
                destination: d.destination.clone(),
                request,
                error,
            }
        })
        .collect();
    report.rendered = Some(rendered);
}

/// One destination in a [`RouteReport`].
#[derive(Debug, Serialize)]
pub struct ReportDelivery {
    /// Destination name.
    pub destination: String,
    /// Routes that named it.
    pub routes: Vec<String>,
}

/// A route's explanation, or why it was not evaluated.
#[derive(Debug, Serialize)]
pub struct ExplainedRoute {
    /// The evaluation (always present, even for skipped routes, so `--json` is uniform).
    #[serde(flatten)]
    pub explanation: RouteExplanation,
    /// True when an earlier matching route had `stop: true`, so this one did not count.
    pub skipped_by_stop: bool,
}

/// Evaluates `payload` as an event of `kind` against `config`, as ingress would.
pub fn route_report(
    config: &Config,
    kind: EventKind,
    payload: &Json,
    explain: bool,
) -> RouteReport {
    let Decision { routes, deliveries } = config.rules.decide(kind, payload);
    let explain = explain.then(|| {
        let mut stopped = false;
        config
            .rules
            .routes()
            .iter()
            .map(|r| {
                let explanation = r.explain(kind, payload);
                let skipped_by_stop = stopped;
                stopped |= explanation.matched && r.stop;
                ExplainedRoute {
                    explanation,
                    skipped_by_stop,
                }
            })
            .collect()
    });
    RouteReport {
        event: kind,
        routes,
        deliveries: deliveries
            .into_iter()
            .map(|d| ReportDelivery {
                destination: d.destination,
                routes: d.routes,
            })
            .collect(),
        explain,
        rendered: None,
    }
}

/// The dry run as text for a terminal.
pub fn render_report(report: &RouteReport) -> String {
    let mut out = String::new();
    if report.routes.is_empty() {
        let _ = writeln!(
            out,
            "no route matches this {} event: it would get 200 \"unrouted\" and go nowhere (kept in the journal for replay unless server.keep_unrouted is false)",
            report.event
        );
    } else {
        let _ = writeln!(out, "matching routes: {}", report.routes.join(", "));
        let _ = writeln!(out, "would be delivered to:");
        for d in &report.deliveries {
            let _ = writeln!(out, "  {}  (via {})", d.destination, d.routes.join(", "));
        }
    }
    if let Some(rendered) = &report.rendered {
        for r in rendered {
            let _ = writeln!(out, "\n--- request to {} ---", r.destination);
            match (&r.request, &r.error) {
                (Some(req), _) => {
                    let _ = writeln!(out, "{req}");
                }
                (None, Some(e)) => {
                    let _ = writeln!(out, "cannot render (the job would be dead-lettered): {e}");
                }
                (None, None) => {}
            }
        }
    }
    if let Some(routes) = &report.explain {
        let _ = writeln!(out, "\nexplanation:");
        for r in routes {
            let e = &r.explanation;
            let mark = if e.matched && !r.skipped_by_stop {
                "✓"
            } else {
                "✗"
            };
            let kinds = if e.events.is_empty() {
                "any".to_string()
            } else {
                e.events
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join("|")
            };
            let _ = writeln!(
                out,
                "{mark} route {:?} [{kinds}] -> {}",
                e.route,
                e.to.join(", ")
            );
            if r.skipped_by_stop {
                let _ = writeln!(
                    out,
                    "    not evaluated: an earlier matching route has stop: true"
                );
                continue;
            }
            match &e.conditions {
                None => {
                    let _ = writeln!(out, "    does not apply to {} events", report.event);
                }
                Some(c) => render_explanation(c, 2, &mut out),
            }
            if e.matched && e.stop {
                let _ = writeln!(out, "    stop: true; later routes are not evaluated");
            }
        }
    }
    out
}
