//! Flint's web dashboard: static HTML, CSS and JavaScript embedded into the
//! jobmanager binary at compile time.
//!
//! # Layout
//!
//! Every file the browser loads lives in `webui/static/` and is served
//! as-is; there is no build step and no external resource (fonts, scripts,
//! CDNs):
//!
//! - `static/index.html` — the page skeleton (overview cards, task manager
//!   and job tables, error banner), served for `""`, `"/"` and `"index.html"`;
//! - `static/app.js` — vanilla JavaScript that polls the public REST API with
//!   relative URLs (`config`, `overview`, `taskmanagers`, `jobs/overview`)
//!   and renders the results;
//! - `static/style.css` — the styling (system fonts only);
//! - `static/favicon.svg` — the tab icon.
//!
//! The files are pulled in with [`include_bytes!`], so this crate has no
//! dependencies and no runtime file access. The REST server calls [`asset`]
//! with the request path (relative to the dashboard root, query string
//! removed) and serves the returned bytes with the given `Content-Type`.
//! Adding a file to `static/` means adding one line to `ASSETS`; a unit test
//! fails if a file in `static/` is not registered.

/// One embedded dashboard file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The file's bytes, exactly as they are in `static/`.
    pub body: &'static [u8],
    /// The value for the HTTP `Content-Type` header.
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every embedded file: path relative to `static/`, bytes, content type.
const ASSETS: &[(&str, &[u8], &str)] = &[
    ("index.html", include_bytes!("../static/index.html"), HTML),
    ("app.js", include_bytes!("../static/app.js"), JS),
    ("style.css", include_bytes!("../static/style.css"), CSS),
    ("favicon.svg", include_bytes!("../static/favicon.svg"), SVG),
];

/// Looks up the embedded file for a request path.
///
/// `""`, `"/"` and `"index.html"` give the index page; any other file is
/// found by its path relative to `static/` (e.g. `"app.js"`), with or
/// without one leading `/`. Only exact names of embedded files match, so
/// unknown paths and anything like `"../Cargo.toml"` give `None`.
pub fn asset(path: &str) -> Option<Asset> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|(name, _, _)| *name == path).map(|&(_, body, content_type)| Asset { body, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_resolves_for_root_paths() {
        let index = asset("index.html").expect("index.html is embedded");
        assert_eq!(asset(""), Some(index));
        assert_eq!(asset("/"), Some(index));
        assert_eq!(asset("/index.html"), Some(index));
        assert_eq!(index.content_type, HTML);
        let text = std::str::from_utf8(index.body).unwrap();
        assert!(text.contains("<title>Flint Dashboard</title>"));
        for id in [
            "tm-count",
            "slots-total",
            "slots-available",
            "jobs-running",
            "jobs-finished",
            "jobs-cancelled",
            "jobs-failed",
            "flint-version",
            "taskmanagers-table",
            "jobs-table",
            "error-banner",
        ] {
            assert!(text.contains(&format!("id=\"{id}\"")), "missing #{id}");
        }
    }

    #[test]
    fn content_types_match_extensions() {
        assert_eq!(asset("app.js").unwrap().content_type, JS);
        assert_eq!(asset("style.css").unwrap().content_type, CSS);
        assert_eq!(asset("favicon.svg").unwrap().content_type, SVG);
        assert_eq!(asset("/app.js"), asset("app.js"));
    }

    #[test]
    fn unknown_paths_are_none() {
        for path in ["missing.html", "App.js", "static/app.js", "app.js/", "//app.js", "overview", "index.htm"] {
            assert_eq!(asset(path), None, "{path:?}");
        }
    }

    #[test]
    fn path_traversal_is_none() {
        for path in [
            "../Cargo.toml",
            "/../Cargo.toml",
            "../src/lib.rs",
            "./app.js",
            "..",
            "../static/app.js",
            "%2e%2e/Cargo.toml",
            "/etc/passwd",
        ] {
            assert_eq!(asset(path), None, "{path:?}");
        }
    }

    #[test]
    fn bodies_match_files_on_disk_and_all_files_are_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        on_disk.sort();
        let mut registered: Vec<String> = ASSETS.iter().map(|(n, _, _)| n.to_string()).collect();
        registered.sort();
        assert_eq!(on_disk, registered, "every file in static/ must be in ASSETS");
        for name in &registered {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(asset(name).unwrap().body, bytes.as_slice(), "{name}");
        }
    }

    #[test]
    fn pages_use_no_external_resources() {
        for (name, body, _) in ASSETS {
            let text = std::str::from_utf8(body).unwrap();
            for needle in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace URI is an identifier, not a fetched resource.
                let allowed = *name == "favicon.svg" && needle == "http://";
                assert!(allowed || !text.contains(needle), "{name} contains {needle}");
            }
        }
    }
}
