//! The one rule for showing a destination's URL to people: a URL may carry a token (Slack
//! webhook URLs are one; CRMs put keys in the query or in `user:password@`), so nothing
//! that prints a URL prints it whole. What differs is only how much an operator needs to
//! see where: [`UrlView`] names the three places.

use std::fmt::Write as _;

/// How much of a URL is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlView {
    /// The host alone: `Debug` of everything holding a URL, and so every log line.
    Host,
    /// `scheme://host[:port]`, then `/…` when a path or query follows: the status page and
    /// `check`'s destination list, where the endpoint is named but not shown.
    Origin,
    /// The whole URL as it will be requested, for `route --render` and `send`: userinfo
    /// and the query string become `<secret>`, and so does the path of a URL that came from
    /// `${VAR}` or a file (`secret_path`).
    Request {
        /// The URL is a secret as a whole: its path is not shown either.
        secret_path: bool,
    },
}

/// `url` as `view` shows it; never a credential.
pub fn show_url(url: &reqwest::Url, view: UrlView) -> String {
    match view {
        UrlView::Host => url.host_str().unwrap_or("?").to_string(),
        UrlView::Origin => {
            let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"));
            if let Some(port) = url.port() {
                let _ = write!(out, ":{port}");
            }
            if url.path() != "/" || url.query().is_some() {
                out.push_str("/…");
            }
            out
        }
        UrlView::Request { secret_path } => {
            let mut url = url.clone();
            if secret_path {
                url.set_path("/<secret>");
            }
            if !url.username().is_empty() || url.password().is_some() {
                // Both only fail for URLs that cannot have userinfo, which this one has.
                let _ = url.set_password(None);
                let _ = url.set_username("<secret>");
            }
            if url.query().is_some() {
                url.set_query(Some("<secret>"));
            }
            url.as_str().replace("%3Csecret%3E", "<secret>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    const SLACK: &str = "https://hooks.slack.com/services/T000/B000/XXXX";
    const CRM: &str = "https://api:pw-1234@crm.example.com:8443/v1/leads?hapikey=k-5678";

    #[test]
    fn the_host_view_is_the_host_alone() {
        assert_eq!(show_url(&url(SLACK), UrlView::Host), "hooks.slack.com");
        assert_eq!(show_url(&url(CRM), UrlView::Host), "crm.example.com");
    }

    #[test]
    fn the_origin_view_marks_what_follows_without_showing_it() {
        assert_eq!(
            show_url(&url(SLACK), UrlView::Origin),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            show_url(&url(CRM), UrlView::Origin),
            "https://crm.example.com:8443/…"
        );
        assert_eq!(
            show_url(&url("http://127.0.0.1:9000/"), UrlView::Origin),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            show_url(&url("http://h/?q=1"), UrlView::Origin),
            "http://h/…"
        );
    }

    #[test]
    fn the_request_view_hides_userinfo_query_and_a_secret_path() {
        let open = UrlView::Request { secret_path: false };
        assert_eq!(
            show_url(&url(CRM), open),
            "https://<secret>@crm.example.com:8443/v1/leads?<secret>"
        );
        assert_eq!(show_url(&url(SLACK), open), SLACK);
        assert_eq!(
            show_url(&url(SLACK), UrlView::Request { secret_path: true }),
            "https://hooks.slack.com/<secret>"
        );
        for view in [UrlView::Host, UrlView::Origin, open] {
            let shown = show_url(&url(CRM), view);
            assert!(
                !shown.contains("pw-1234") && !shown.contains("k-5678"),
                "{shown}"
            );
        }
    }
}
