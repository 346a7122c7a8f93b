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

/// Run headless Chromium on a local file with `extra` arguments (window size, what
/// to produce); its standard output.
fn run(chromium: &Path, page: &Path, profile: &Path, extra: &[String]) -> String {
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
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM Chromium renders for a local file.
pub fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> String {
    run(chromium, page, profile, &["--dump-dom".into()])
}

/// A screenshot of the first `width` x `height` pixels of a page, seen in a window
/// of that size, as PNG.
pub fn screenshot(
    chromium: &Path,
    page: &Path,
    profile: &Path,
    (width, height): (u32, u32),
    png: &Path,
) {
    run(
        chromium,
        page,
        profile,
        &[
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", png.display()),
        ],
    );
    assert!(png.exists(), "no screenshot at {}", png.display());
}

/// A PNG's width and height (from its header).
pub fn png_size(png: &Path) -> (u32, u32) {
    let bytes = std::fs::read(png).expect("read png");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (be(16), be(20))
}

/// How a page lays out in a window `width` pixels wide.
#[derive(Debug)]
pub struct Layout {
    /// The window's inner width, as the page saw it.
    pub viewport: i64,
    /// `document.documentElement.scrollWidth`: wider than the viewport means a
    /// horizontal scrollbar.
    pub scroll_width: i64,
    /// Table cells, headings and paragraphs whose content is wider than they are
    /// (cut off or spilling over their neighbours): `tag#table-id` each.
    pub overflowing: Vec<String>,
}

/// Lay a page out in a `width` x `height` window and measure it: a copy of the page
/// with a probe script (the page itself has none) that writes the measures into the DOM.
pub fn layout(chromium: &Path, page: &Path, profile: &Path, (width, height): (u32, u32)) -> Layout {
    const PROBE: &str = r#"<script>(function(){var d=document.documentElement,bad=[];
document.querySelectorAll('td,th,h1,h2,p,li,.card').forEach(function(e){
if(e.scrollWidth>e.clientWidth+1){var t=e.closest('table');bad.push(e.tagName.toLowerCase()+'#'+(t&&t.id?t.id:'page'));}});
var o=document.createElement('output');o.id='layout-probe';
o.textContent=[window.innerWidth,d.scrollWidth].concat(bad).join(' ');document.body.appendChild(o);})();</script>"#;
    let html = std::fs::read_to_string(page).expect("read page");
    let probed = page.with_extension("probe.html");
    let html = match html.rfind("</body>") {
        Some(at) => format!("{}{PROBE}{}", &html[..at], &html[at..]),
        None => html + PROBE,
    };
    std::fs::write(&probed, html).expect("write probe page");
    let dom = run(
        chromium,
        &probed,
        profile,
        &[
            format!("--window-size={width},{height}"),
            "--dump-dom".into(),
        ],
    );
    let text =
        text_by_id(&dom, "layout-probe").unwrap_or_else(|| panic!("no probe output in {dom}"));
    let mut parts = text.split_whitespace();
    let mut number = || {
        parts
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            .expect("probe number")
    };
    let (viewport, scroll_width) = (number(), number());
    Layout {
        viewport,
        scroll_width,
        overflowing: parts.map(str::to_string).collect(),
    }
}

/// The text inside the element with `id` (no nested tags expected).
pub fn text_by_id(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = at + dom[at..].find('>')? + 1;
    let end = start + dom[start..].find('<')?;
    Some(dom[start..end].trim().to_string())
}
