//! Headless Chromium for checking pages as a person would see them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Chromium binary, or `None` (test skipped) when it is not installed and
/// `CI` is not set; on CI it must be there (`.ci/run` installs it).
pub fn find() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in ["/usr/bin", "/usr/local/bin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return Some(p);
            }
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so Chromium is required (apt-get install chromium)");
    }
    eprintln!("skipped: Chromium is not installed");
    None
}

/// The DOM Chromium renders for a local file.
pub fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!(
                "--user-data-dir={}",
                profile.join("chromium-profile").display()
            ),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text inside the element with `id` (no nested tags expected).
pub fn text_by_id(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = at + dom[at..].find('>')? + 1;
    let end = start + dom[start..].find('<')?;
    Some(dom[start..end].trim().to_string())
}
