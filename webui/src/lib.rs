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
//! - `static/favicon.svg` — the tab icon;
//! - `static/vendor/` — third-party libraries exactly as the npm registry serves them, with
//!   their licenses: graph layout ([@dagrejs/dagre](https://github.com/dagrejs/dagre), MIT,
//!   which bundles @dagrejs/graphlib) and charts ([uPlot](https://github.com/leeoniya/uPlot),
//!   MIT). `scripts/update-webui-vendor.sh` fetches them and records versions, the
//!   registry's integrity hashes and each file's sha256 in `vendor.json`; a unit test checks
//!   the committed files against it, so building needs neither node nor the network.
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
const TEXT: &str = "text/plain; charset=utf-8";

/// Every embedded file: path relative to `static/`, bytes, content type.
const ASSETS: &[(&str, &[u8], &str)] = &[
    ("index.html", include_bytes!("../static/index.html"), HTML),
    ("app.js", include_bytes!("../static/app.js"), JS),
    ("pages/job.js", include_bytes!("../static/pages/job.js"), JS),
    ("pages/job_tabs.js", include_bytes!("../static/pages/job_tabs.js"), JS),
    ("pages/vertex.js", include_bytes!("../static/pages/vertex.js"), JS),
    ("pages/jobs.js", include_bytes!("../static/pages/jobs.js"), JS),
    ("pages/submit.js", include_bytes!("../static/pages/submit.js"), JS),
    ("pages/tm.js", include_bytes!("../static/pages/tm.js"), JS),
    ("pages/jm.js", include_bytes!("../static/pages/jm.js"), JS),
    ("style.css", include_bytes!("../static/style.css"), CSS),
    ("favicon.svg", include_bytes!("../static/favicon.svg"), SVG),
    ("vendor/dagre.min.js", include_bytes!("../static/vendor/dagre.min.js"), JS),
    ("vendor/dagre.LICENSE.txt", include_bytes!("../static/vendor/dagre.LICENSE.txt"), TEXT),
    ("vendor/graphlib.LICENSE.txt", include_bytes!("../static/vendor/graphlib.LICENSE.txt"), TEXT),
    ("vendor/uPlot.iife.min.js", include_bytes!("../static/vendor/uPlot.iife.min.js"), JS),
    ("vendor/uPlot.min.css", include_bytes!("../static/vendor/uPlot.min.css"), CSS),
    ("vendor/uPlot.LICENSE.txt", include_bytes!("../static/vendor/uPlot.LICENSE.txt"), TEXT),
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
        let mut on_disk: Vec<String> = Vec::new();
        let mut pending = vec![dir.clone()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    on_disk.push(path.strip_prefix(&dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut registered: Vec<String> = ASSETS.iter().map(|(n, _, _)| n.to_string()).collect();
        registered.sort();
        assert_eq!(on_disk, registered, "every file in static/ must be in ASSETS");
        for name in &registered {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(asset(name).unwrap().body, bytes.as_slice(), "{name}");
        }
    }

    /// The vendored libraries are exactly the files `scripts/update-webui-vendor.sh` fetched
    /// from npm (their sha256 in `vendor.json`), and each package's license ships with them.
    #[test]
    fn vendored_files_match_vendor_json() {
        use sha2::{Digest, Sha256};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("vendor.json")).unwrap()).unwrap();
        let files = manifest["files"].as_object().unwrap();
        let vendored: Vec<&str> = ASSETS.iter().map(|(n, _, _)| *n).filter(|n| n.starts_with("vendor/")).collect();
        assert_eq!(files.len(), vendored.len(), "every vendored file is registered");
        for name in vendored {
            let expected =
                files.get(name).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{name} not in vendor.json"));
            let got = hex(&Sha256::digest(asset(name).unwrap().body));
            assert_eq!(got, expected, "{name} differs from what npm served: run scripts/update-webui-vendor.sh");
        }
        for package in manifest["packages"].as_array().unwrap() {
            assert_eq!(package["license"], "MIT", "{package}");
            assert!(package["integrity"].as_str().unwrap().starts_with("sha512-"), "{package}");
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn pages_use_no_external_resources() {
        for (name, body, _) in ASSETS {
            // The SVG namespace URI is an identifier and uPlot's banner comment names its home
            // page; nothing is fetched from either.
            let text = std::str::from_utf8(body)
                .unwrap()
                .replace("http://www.w3.org/2000/svg", "")
                .replace("https://github.com/leeoniya/uPlot", "");
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} contains {needle}");
            }
        }
    }
}
