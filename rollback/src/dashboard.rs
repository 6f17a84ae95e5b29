//! The dashboard's files, embedded in the binary from `public/dashboard/` (the Worker serves
//! the same files as static assets), so that the static musl build still ships as one file.

use telemetry_core::Response;
use telemetry_core::dashboard::{DASHBOARD_PATH, HEADERS, file_for};

/// The embedded copy of a file under `public/dashboard/`.
fn contents(name: &str) -> Option<&'static str> {
    match name {
        "index.html" => Some(include_str!("../../public/dashboard/index.html")),
        "app.js" => Some(include_str!("../../public/dashboard/app.js")),
        "style.css" => Some(include_str!("../../public/dashboard/style.css")),
        _ => None,
    }
}

/// The answer to a `GET` or `HEAD` of `path` when it is the dashboard's: a file with the
/// dashboard's headers, or for `/dashboard` a redirect to the page. `None` for anything else,
/// which the core routes.
pub fn answer(method: &str, path: &str) -> Option<Response> {
    if !matches!(method, "GET" | "HEAD") {
        return None;
    }
    if path == "/dashboard" {
        let mut headers: Vec<(&'static str, String)> = vec![("location", DASHBOARD_PATH.into())];
        headers.extend(
            HEADERS
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        return Some(Response {
            status: 308,
            headers,
            body: String::new(),
            outcome: "redirect",
        });
    }
    let (name, content_type) = file_for(path)?;
    let body = contents(name)?;
    let mut headers: Vec<(&'static str, String)> = vec![("content-type", content_type.into())];
    headers.extend(
        HEADERS
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    Some(Response {
        status: 200,
        headers,
        body: if method == "HEAD" {
            String::new()
        } else {
            body.to_owned()
        },
        outcome: "ok",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_core_names_is_embedded_and_carries_the_policy() {
        for (served_at, name, _) in telemetry_core::dashboard::FILES {
            let page = answer("GET", &format!("{DASHBOARD_PATH}{served_at}")).unwrap();
            assert_eq!(page.status, 200, "{name}");
            assert_eq!(page.body, contents(name).unwrap());
            let policy = page.header("content-security-policy").unwrap();
            assert!(policy.starts_with("default-src 'none'"), "{policy}");
        }
        let redirect = answer("GET", "/dashboard").unwrap();
        assert_eq!(
            (redirect.status, redirect.header("location")),
            (308, Some("/dashboard/"))
        );
        assert!(answer("POST", "/dashboard/").is_none());
        assert!(answer("GET", "/dashboard/missing.js").is_none());
    }
}
