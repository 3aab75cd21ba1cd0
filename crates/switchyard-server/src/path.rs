//! Request-path handling shared by the API and the public listener.
//!
//! CHP resolves dot segments (WHATWG URL parsing: `/a/../b` is `/b`, `%2e%2e` counts as
//! `..`, `\` as `/`) and then `decodeURIComponent`s the path. Routing and forwarding must
//! agree, so the public listener routes on the decoded form of the *normalised raw* path
//! and forwards that same normalised raw path (escapes kept).

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Characters re-escaped when a decoded segment has to be written back into a raw path.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A path with a malformed escape (`%ZZ`, `%`) or escapes that are not UTF-8 (`%FF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed percent-encoding in path")]
pub(crate) struct MalformedPath;

/// Resolves `.` and `..` segments (also percent-encoded) and turns `\` into `/`.
pub(crate) fn normalize(raw: &str) -> Cow<'_, str> {
    // One byte scan rules out most paths: without a backslash, `.` or `%`
    // there is nothing to resolve.
    let suspect = raw.bytes().any(|b| matches!(b, b'\\' | b'.' | b'%'));
    let needs_work = !raw.starts_with('/')
        || (suspect && (raw.contains('\\') || raw.split('/').any(|s| is_dot(s) || is_dot_dot(s))));
    if !needs_work {
        return Cow::Borrowed(raw);
    }
    let replaced = raw.replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    let parts: Vec<&str> = replaced.trim_start_matches('/').split('/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        if is_dot(part) || is_dot_dot(part) {
            if is_dot_dot(part) {
                out.pop();
            }
            // `/a/b/..` and `/a/.` end in a directory: keep the trailing slash.
            if i == last {
                out.push("");
            }
        } else {
            out.push(part);
        }
    }
    // Leading slashes other than the first are kept as CHP's trie ignores them anyway.
    let leading = replaced.len() - replaced.trim_start_matches('/').len();
    let mut s = "/".repeat(leading.max(1));
    s.push_str(&out.join("/"));
    Cow::Owned(s)
}

fn is_dot(s: &str) -> bool {
    s == "." || s.eq_ignore_ascii_case("%2e")
}

fn is_dot_dot(s: &str) -> bool {
    ["..", ".%2e", "%2e.", "%2e%2e"]
        .iter()
        .any(|dots| s.eq_ignore_ascii_case(dots))
}

/// `decodeURIComponent`: every `%` must start a valid escape and the result must be UTF-8.
pub(crate) fn decode(raw: &str) -> Result<Cow<'_, str>, MalformedPath> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + off;
        let hex = bytes.get(at + 1..at + 3).ok_or(MalformedPath)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(MalformedPath);
        }
        i = at + 3;
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| MalformedPath)
}

/// Removes the first `n` routing segments (as the trie counts them, on the *decoded* path)
/// from a raw path, keeping escapes in what remains. Returns `""` when nothing remains,
/// else a path starting with `/`. This is `--no-include-prefix` done right: CHP cuts as
/// many characters as the decoded prefix has from the raw path, which is wrong with escapes
/// and with host routing.
pub(crate) fn strip_segments(raw: &str, n: usize) -> Result<String, MalformedPath> {
    if n == 0 {
        return Ok(raw.to_owned());
    }
    let mut rest = raw.trim_start_matches('/');
    let mut remaining = n;
    while remaining > 0 {
        if rest.is_empty() {
            return Ok(String::new());
        }
        let end = rest.find('/').unwrap_or(rest.len());
        let segment = &rest[..end];
        let decoded = decode(segment)?;
        let parts = decoded.split('/').count();
        if parts <= remaining {
            remaining -= parts;
            rest = &rest[end..];
            if remaining > 0 {
                // The `/` between this segment and the next one to strip.
                rest = rest.strip_prefix('/').unwrap_or(rest);
            }
        } else {
            // The boundary falls inside a segment holding an encoded `/` (`a%2Fb`).
            let tail: Vec<String> = decoded
                .split('/')
                .skip(remaining)
                .map(|p| utf8_percent_encode(p, SEGMENT).to_string())
                .collect();
            return Ok(format!("/{}{}", tail.join("%2F"), &rest[end..]));
        }
    }
    Ok(rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_resolve_like_whatwg() {
        assert_eq!(normalize("/user/foo/../x"), "/user/x");
        assert_eq!(normalize("/user/foo/%2e%2e/x"), "/user/x");
        assert_eq!(normalize("/user/foo/.%2E/x"), "/user/x");
        assert_eq!(normalize("/a/./b"), "/a/b");
        assert_eq!(normalize("/a/b/.."), "/a/");
        assert_eq!(normalize("/a/."), "/a/");
        assert_eq!(normalize("/../../x"), "/x");
        assert_eq!(normalize("/a\\b"), "/a/b");
        assert_eq!(normalize("/plain/path"), "/plain/path");
        assert_eq!(normalize("*"), "/*");
        assert_eq!(normalize("/a/..%2fb"), "/a/..%2fb");
    }

    #[test]
    fn decode_is_strict_decode_uri_component() {
        assert_eq!(decode("/user/foo%40bar").unwrap(), "/user/foo@bar");
        assert_eq!(decode("/a%2Fb").unwrap(), "/a/b");
        assert_eq!(decode("/%C3%A9").unwrap(), "/é");
        assert_eq!(decode("/bad%ZZ"), Err(MalformedPath));
        assert_eq!(decode("/%"), Err(MalformedPath));
        assert_eq!(decode("/%4"), Err(MalformedPath));
        assert_eq!(decode("/%FF"), Err(MalformedPath));
    }

    #[test]
    fn strip_segments_counts_decoded_segments() {
        assert_eq!(strip_segments("/bar/rest/of/it", 1).unwrap(), "/rest/of/it");
        assert_eq!(strip_segments("/bar", 1).unwrap(), "");
        assert_eq!(strip_segments("/bar/", 1).unwrap(), "/");
        assert_eq!(strip_segments("/b%40r/x%20y/z", 1).unwrap(), "/x%20y/z");
        assert_eq!(strip_segments("/a%2Fb/c", 2).unwrap(), "/c");
        assert_eq!(strip_segments("/a%2Fb%20c/d", 1).unwrap(), "/b%20c/d");
        assert_eq!(strip_segments("//a/b", 1).unwrap(), "/b");
        assert_eq!(strip_segments("/a/b", 0).unwrap(), "/a/b");
        assert_eq!(strip_segments("/a", 3).unwrap(), "");
        // Keys of several segments (a bug until the routing property test found it:
        // `/user/alice/lab` lost only `user`).
        assert_eq!(strip_segments("/user/alice/lab", 2).unwrap(), "/lab");
        assert_eq!(strip_segments("/a/b/c/", 3).unwrap(), "/");
        assert_eq!(strip_segments("/a//b/c", 3).unwrap(), "/c");
        assert_eq!(strip_segments("/a/b%2Fc/d", 3).unwrap(), "/d");
    }
}
