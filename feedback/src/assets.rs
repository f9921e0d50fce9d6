//! The page and its static files, compiled into the binary: the service needs no files
//! beside it and nothing is fetched at run time. abcjs (sheet music in the browser) is the
//! npm package pinned in `assets/package-lock.json`, vendored by `assets/update-vendor.sh`.

pub const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const ABCJS: &str = include_str!("../assets/vendor/abcjs-basic-min.js");

/// Scripts only from this server; abcjs draws SVG with inline styles.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src 'self'; \
     connect-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// A static file by name: its content type and body.
pub fn file(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        "abcjs-basic-min.js" => ("text/javascript; charset=utf-8", ABCJS),
        _ => return None,
    })
}
