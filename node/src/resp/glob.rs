//! Redis's glob patterns (`stringmatchlen`) for CONFIG GET, matched
//! iteratively in time O(pattern × text) and constant stack, whatever the
//! pattern: Redis's own matcher recurses on every `*`, which a pattern of
//! a million stars turns into a stack overflow and `'*' × 60 + 'q'` into
//! exponential backtracking. Pure.
//!
//! `*` matches any run of bytes, `?` one byte, `[abc]` one of a set,
//! `[^a]` one byte not in it, `[a-z]` a range, `\x` the byte `x`
//! literally (also inside a set). Case-insensitive when asked, as CONFIG
//! GET is.

/// Longest pattern CONFIG GET accepts; a longer one is refused with an
/// error (parameter names are a few dozen bytes).
pub(crate) const PATTERN_MAX: usize = 256;

/// Whether `text` matches `pattern`.
pub(crate) fn matches(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern just past it and
    // the text position it has swallowed up to. Only the last star ever
    // needs to be retried: it can absorb whatever an earlier one would.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                while pattern.get(p) == Some(&b'*') {
                    p += 1;
                }
                if p == pattern.len() {
                    return true;
                }
                star = Some((p, t));
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => class(pattern, p, text[t], eq),
            Some(b'\\') if p + 1 < pattern.len() => eq(pattern[p + 1], text[t]).then_some(2),
            Some(&c) => eq(c, text[t]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(width), _) => {
                p += width;
                t += 1;
            }
            (None, Some((after, swallowed))) => {
                // Let the last star take one more byte and retry.
                star = Some((after, swallowed + 1));
                p = after;
                t = swallowed + 1;
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `byte` against the set starting at `pattern[open] == b'['`:
/// the width of the set in the pattern when it matches. An unclosed set
/// runs to the end of the pattern, as in Redis.
fn class(pattern: &[u8], open: usize, byte: u8, eq: impl Fn(u8, u8) -> bool) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            hit |= eq(pattern[i + 1], byte);
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (mut lo, mut hi) = (pattern[i], pattern[i + 2]);
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            let folded = [byte, byte.to_ascii_lowercase(), byte.to_ascii_uppercase()];
            hit |= folded
                .iter()
                .any(|&b| (lo..=hi).contains(&b) && eq(b, byte));
            i += 3;
        } else {
            hit |= eq(pattern[i], byte);
            i += 1;
        }
    }
    // Past the closing bracket (or at the end when there is none).
    let end = (i + 1).min(pattern.len());
    (hit != negate).then_some(end - open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        matches(p.as_bytes(), t.as_bytes(), true)
    }

    #[test]
    fn redis_glob_semantics() {
        assert!(m("*", "save"));
        assert!(m("*", ""));
        assert!(m("append*", "appendonly"));
        assert!(m("sav?", "save"));
        assert!(!m("sav?", "sav"));
        assert!(!m("save", "appendonly"));
        assert!(m("a*d*y", "appendonly"));
        assert!(!m("a*d*x", "appendonly"));
        assert!(m("*only", "appendonly"));
        assert!(m("[sa]ave", "save"));
        assert!(m("[^x]ave", "save"));
        assert!(!m("[^s]ave", "save"));
        assert!(m("[a-z]ave", "save"));
        assert!(m("[z-a]ave", "save"), "a reversed range, as in Redis");
        assert!(!m("[0-9]ave", "save"));
        assert!(m("\\*x", "*x"));
        assert!(!m("\\*x", "ax"));
        assert!(m("[\\]]", "]"));
        assert!(m("SAVE", "save"), "case-insensitive");
        assert!(m("[S]ave", "save"));
        assert!(!matches(b"SAVE", b"save", false));
        assert!(m("max*cl?ents", "maxclients"));
        assert!(!m("x", ""));
    }

    /// The recursive matcher this replaces overflowed its stack on the
    /// first and took exponential time on the second.
    #[test]
    fn hostile_patterns_finish() {
        let stars = vec![b'*'; 1_000_000];
        assert!(matches(&stars, b"appendonly", true));
        let mut sixty = vec![b'*'; 60];
        sixty.push(b'q');
        assert!(!matches(&sixty, b"appendfsync", true));
        assert!(!matches(&sixty, &[b'a'; 4096], true));
        let alternating: Vec<u8> = b"*a".repeat(5_000);
        assert!(!matches(&alternating, &[b'a'; 4_000], true));
    }
}
