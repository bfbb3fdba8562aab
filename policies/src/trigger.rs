//! The subject trigger: finding it case-insensitively and removing it.
//!
//! Comparison is per character with Unicode lower-casing (`[SIKKER]`,
//! `[Sikker]` and `[sikker]` are the same), done on the original string so
//! that byte positions never shift (lower-casing can change a string's
//! length, e.g. `İ`).

/// Whether `a` and `b` are the same character, ignoring case.
fn same_char(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase())
}

/// The byte length of the match of `trigger` at the start of `s`, if any.
fn match_at(s: &str, trigger: &str) -> Option<usize> {
    let mut rest = s.char_indices();
    for t in trigger.chars() {
        let (_, c) = rest.next()?;
        if !same_char(c, t) {
            return None;
        }
    }
    Some(rest.next().map_or(s.len(), |(i, _)| i))
}

/// The byte ranges of every non-overlapping occurrence of `trigger` in
/// `subject`, left to right. An empty trigger never matches.
pub(crate) fn occurrences(subject: &str, trigger: &str) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    if trigger.is_empty() {
        return found;
    }
    let mut i = 0;
    while i < subject.len() {
        let Some(tail) = subject.get(i..) else { break };
        if let Some(len) = match_at(tail, trigger) {
            found.push(i..i + len);
            i += len;
        } else {
            i += tail.chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// `subject` with every occurrence of `trigger` removed and the whitespace
/// tidied: where a trigger was, the text on both sides is joined by one
/// space (none at the ends), and the result is trimmed. `None` when the
/// subject does not contain the trigger.
pub(crate) fn remove(subject: &str, trigger: &str) -> Option<String> {
    let found = occurrences(subject, trigger);
    if found.is_empty() {
        return None;
    }
    let mut pieces = Vec::with_capacity(found.len() + 1);
    let mut start = 0;
    for r in &found {
        pieces.push(subject.get(start..r.start).unwrap_or_default());
        start = r.end;
    }
    pieces.push(subject.get(start..).unwrap_or_default());

    let mut out = String::with_capacity(subject.len());
    for piece in pieces {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_edge_cases() {
        let t = "[sikker]";
        for (subject, want) in [
            ("[sikker] Dom i sag 12", Some("Dom i sag 12")),
            ("Dom [sikker] i sag 12", Some("Dom i sag 12")),
            ("Dom i sag 12 [sikker]", Some("Dom i sag 12")),
            ("[SIKKER] Dom", Some("Dom")),
            ("[Sikker] Dom", Some("Dom")),
            ("[sikker] Dom [SIKKER] nr [sikker]", Some("Dom nr")),
            ("[sikker][sikker]Dom", Some("Dom")),
            ("Dom[sikker]nr", Some("Dom nr")),
            ("  Re:   [sikker]   Dom  ", Some("Re: Dom")),
            ("Re: [sikker]", Some("Re:")),
            ("[sikker]", Some("")),
            ("   [sikker]   ", Some("")),
            ("Dom i sag 12", None),
            ("[sikke] Dom", None),
            ("sikker Dom", None),
            ("", None),
            ("Æblegrød [SIKKER] på ø", Some("Æblegrød på ø")),
        ] {
            assert_eq!(remove(subject, t).as_deref(), want, "{subject:?}");
        }
    }

    #[test]
    fn unicode_trigger_and_length_changing_case() {
        assert_eq!(
            remove("Hej [FORTROLIGT-Ø] x", "[fortroligt-ø]").as_deref(),
            Some("Hej x")
        );
        // 'İ' lower-cases to two chars; matching must not panic or misalign.
        assert_eq!(remove("İİ [sikker] İ", "[sikker]").as_deref(), Some("İİ İ"));
        assert_eq!(remove("abc", "").as_deref(), None);
        assert_eq!(occurrences("aaaa", "aa"), vec![0..2, 2..4]);
    }
}
