//! The dashboard's pages as both targets serve them: the files under `public/dashboard/` (the
//! Worker's static assets, the rollback's embedded copy) and the headers every one carries.
//! `public/_headers` says the same for the Worker (`rollback/tests/dashboard.rs` compares).

/// Where the dashboard lives; `/dashboard` alone is sent here.
pub const DASHBOARD_PATH: &str = "/dashboard/";

/// The page's policy: its own script, style and API only, nothing inline, framed by no one.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The headers every dashboard file is served with, on both targets.
pub const HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    // Revalidated on every load, so that a new deployment's page is the one shown.
    ("cache-control", "no-cache"),
];

/// The dashboard's files, by the path under [`DASHBOARD_PATH`] they are served at (`""` is
/// the page), with their content type.
pub const FILES: [(&str, &str, &str); 3] = [
    ("", "index.html", "text/html; charset=utf-8"),
    ("app.js", "app.js", "text/javascript; charset=utf-8"),
    ("style.css", "style.css", "text/css; charset=utf-8"),
];

/// The file a request path names: its name under `public/dashboard/` and content type.
pub fn file_for(path: &str) -> Option<(&'static str, &'static str)> {
    let rest = path.strip_prefix(DASHBOARD_PATH)?;
    FILES
        .iter()
        .find(|(served_at, _, _)| *served_at == rest)
        .map(|(_, name, content_type)| (*name, *content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dashboard_s_own_files_are_named() {
        assert_eq!(
            file_for("/dashboard/"),
            Some(("index.html", "text/html; charset=utf-8"))
        );
        assert_eq!(file_for("/dashboard/app.js").map(|f| f.0), Some("app.js"));
        for other in [
            "/dashboard",
            "/dashboard/index.html/",
            "/dashboard/../app.js",
            "/dashboard/x.js",
            "/app.js",
        ] {
            assert_eq!(file_for(other), None, "{other}");
        }
    }
}
