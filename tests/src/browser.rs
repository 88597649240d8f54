//! Real browsers for the dashboard tests: Debian's headless Chromium, either run once per page
//! (`render`: the DOM after the scripts ran; `screenshot`) or driven through ChromeDriver
//! (`Browser`: clicks, typing, uploads, dialogs) with the maintained WebDriver client
//! fantoccini.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// Debian's Chromium.
pub fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists()).expect(
        "Chromium is required for the dashboard tests: apt-get install -y chromium (see scripts/install-test-deps.sh)",
    )
}

/// Debian's ChromeDriver (package `chromium-driver`).
pub fn chromedriver() -> &'static str {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ChromeDriver is required for the dashboard tests: apt-get install -y chromium-driver (see scripts/install-test-deps.sh)")
}

/// Renders `url` in headless Chromium and returns the DOM after scripts ran.
pub fn render(url: &str, profile_dir: &Path) -> String {
    render_with(url, profile_dir, &[])
}

/// [`render`] with extra Chromium switches (e.g. `--ignore-certificate-errors` for a
/// dashboard served over HTTPS with a test CA's certificate).
pub fn render_with(url: &str, profile_dir: &Path, extra_args: &[&str]) -> String {
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--timeout=20000",
            "--dump-dom",
        ])
        .args(extra_args)
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The directory screenshots are saved to: `target/tmp/dashboard/` (next to the binaries'
/// `target/<profile>/`).
pub fn screenshot_dir() -> PathBuf {
    let target = crate::bin_dir().parent().map(Path::to_path_buf).unwrap_or_else(|| crate::repo_root().join("target"));
    let dir = target.join("tmp").join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a screenshot of `url` as `<name>.png` under [`screenshot_dir`] and returns its path.
pub fn screenshot(url: &str, profile_dir: &Path, name: &str) -> PathBuf {
    let path = screenshot_dir().join(format!("{name}.png"));
    let status = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .args(["--virtual-time-budget=5000", "--timeout=20000", "--window-size=1400,1100"])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(path.exists(), "no screenshot of {url}: {}", String::from_utf8_lossy(&status.stderr));
    println!("screenshot: {}", path.display());
    path
}

/// `n` as the dashboard shows counts (`toLocaleString("en-US")`: 12,345).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits.as_bytes().rchunks(3).rev().map(|c| std::str::from_utf8(c).unwrap()).collect();
    groups.join(",")
}

/// The `<tr>` of `table` (by id) whose `attr` is `value`, as rendered.
pub fn row<'a>(dom: &'a str, table: &str, attr: &str, value: &str) -> &'a str {
    let table_at = dom.find(&format!("id=\"{table}\"")).unwrap_or_else(|| panic!("no #{table}:\n{dom}"));
    let rest = &dom[table_at..];
    let start = rest.find(&format!("<tr {attr}=\"{value}\"")).unwrap_or_else(|| panic!("no row {value} in #{table}"));
    let end = rest[start..].find("</tr>").unwrap();
    &rest[start..start + end]
}

/// A headless Chromium driven through ChromeDriver (WebDriver), with a blocking API.
///
/// ChromeDriver listens on a free port of 127.0.0.1 and is killed (by pid) on drop; the
/// browser profile lives in `profile_dir`. Every wait has a deadline.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_log: PathBuf,
    /// How long `wait_*` calls wait.
    pub deadline: Duration,
}

impl Browser {
    /// Starts ChromeDriver and a 1400×1000 headless Chromium session.
    pub fn start(profile_dir: &Path) -> Browser {
        std::fs::create_dir_all(profile_dir).unwrap();
        let port = crate::free_port();
        let driver_log = profile_dir.join("chromedriver.log");
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-background-networking", "--disable-sync",
                         "--disable-component-update", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile_dir.join("profile").display())],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match runtime.block_on(ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&url)) {
                Ok(client) => break client,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("no WebDriver session from chromedriver on {url}: {e}; log {}", driver_log.display()),
            }
        };
        Browser { runtime, client: Some(client), driver, driver_log, deadline: Duration::from_secs(30) }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Opens `url` and waits until the dashboard rendered it (`body[data-loaded=true]`).
    pub fn open(&self, url: &str) {
        self.goto(url);
        self.wait_loaded();
    }

    /// Navigates to `url` without waiting for anything.
    pub fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Waits until the dashboard finished rendering the current page.
    pub fn wait_loaded(&self) {
        self.wait_for("the page to load", || {
            (self.script("return document.body.dataset.loaded === 'true'") == serde_json::Value::Bool(true))
                .then_some(())
        });
    }

    /// Polls `f` until it gives `Some`, or panics after [`Browser::deadline`].
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + self.deadline;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= until {
                let url = self.url();
                let body = self.text_of("body").unwrap_or_default();
                panic!("waited {:?} for {what} on {url}; the page shows:\n{body}", self.deadline);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `js` (a function body; `arguments` are not passed) and returns its result.
    pub fn script(&self, js: &str) -> serde_json::Value {
        self.runtime.block_on(self.client().execute(js, vec![])).unwrap_or_else(|e| panic!("script {js}: {e}"))
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.runtime.block_on(self.client().current_url()).map(|u| u.to_string()).unwrap_or_default()
    }

    /// The visible text of the first element matching `css`, if there is one.
    pub fn text_of(&self, css: &str) -> Option<String> {
        self.runtime.block_on(async {
            let e = self.client().find(Locator::Css(css)).await.ok()?;
            e.text().await.ok()
        })
    }

    /// Waits for an element matching `css` whose text satisfies `ok`, and returns the text.
    pub fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        self.wait_for(&format!("`{css}` with the expected text"), || self.text_of(css).filter(|t| ok(t)))
    }

    /// Clicks the first element matching `css` (waiting for it to exist).
    pub fn click(&self, css: &str) {
        self.wait_for(&format!("`{css}` to click"), || {
            self.runtime.block_on(async {
                let e = self.client().find(Locator::Css(css)).await.ok()?;
                e.click().await.ok()
            })
        });
    }

    /// Types `text` into the element matching `css` (for a file input: the file's path).
    pub fn type_into(&self, css: &str, text: &str) {
        self.wait_for(&format!("`{css}` to type into"), || {
            self.runtime.block_on(async {
                let e = self.client().find(Locator::Css(css)).await.ok()?;
                e.send_keys(text).await.ok()
            })
        });
    }

    /// Clears the input matching `css`.
    pub fn clear(&self, css: &str) {
        self.wait_for(&format!("`{css}` to clear"), || {
            self.runtime.block_on(async {
                let e = self.client().find(Locator::Css(css)).await.ok()?;
                e.clear().await.ok()
            })
        });
    }

    /// Goes back in the browser's history and waits for the page.
    pub fn back(&self) {
        self.runtime.block_on(self.client().back()).unwrap();
        self.wait_loaded();
    }

    /// Saves a screenshot of the current page as `<name>.png` under [`screenshot_dir`].
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client().screenshot()).expect("screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }

    /// The cells (`data-col` -> text) of the rows of table `table` (by id), keyed by the
    /// rows' attribute `attr`, in the table's order.
    pub fn rows(&self, table: &str, attr: &str) -> Vec<(String, serde_json::Map<String, serde_json::Value>)> {
        let js = format!(
            "return [...document.querySelectorAll('#{table} tbody tr[{attr}]')].map(r => [r.getAttribute('{attr}'), \
             Object.fromEntries([...r.cells].map(c => [c.dataset.col, c.textContent.trim()]))])"
        );
        self.script(&js)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_object().unwrap().clone()))
            .collect()
    }

    /// Starts counting the dashboard's refreshes (each one rewrites `#last-updated`).
    pub fn count_refreshes(&self) {
        self.script(
            "window.refreshes = 0; new MutationObserver(() => window.refreshes++) \
               .observe(document.getElementById('last-updated'), { childList: true, characterData: true, subtree: true });",
        );
    }

    /// Waits until `n` refreshes happened since [`Browser::count_refreshes`].
    pub fn wait_refreshes(&self, n: u64) {
        self.wait_for(&format!("{n} refreshes"), || {
            (self.script("return window.refreshes").as_u64()? >= n).then_some(())
        });
    }

    /// ChromeDriver's log, for failures.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ =
                self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), client.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
