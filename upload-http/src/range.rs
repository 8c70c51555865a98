//! Single-range `Range: bytes=…` parsing (RFC 9110 §14). Multiple ranges are
//! answered with the whole file, which the RFC allows.

/// What to send for a request with an optional Range header.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole file.
    Whole,
    /// 206 with bytes `start..start+len`.
    Partial {
        /// First byte.
        start: u64,
        /// Byte count.
        len: u64,
    },
    /// 416.
    Unsatisfiable,
}

/// Decides how to answer `range` (the header value) for a file of `size` bytes.
pub fn answer(range: Option<&str>, size: u64) -> RangeAnswer {
    // The range unit is case-insensitive (RFC 9110 §14.1).
    let Some(spec) = range
        .map(str::trim)
        .filter(|r| r.len() >= 6 && r.is_char_boundary(6) && r[..6].eq_ignore_ascii_case("bytes="))
        .map(|r| &r[6..])
    else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), parse(first), parse(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                let len = n.min(size);
                RangeAnswer::Partial {
                    start: size - len,
                    len,
                }
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if start >= size {
                return RangeAnswer::Unsatisfiable;
            }
            let end = end.map_or(size - 1, |e| e.min(size - 1));
            if end < start {
                return RangeAnswer::Whole;
            }
            RangeAnswer::Partial {
                start,
                len: end - start + 1,
            }
        }
        _ => RangeAnswer::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(answer(None, 10), RangeAnswer::Whole);
        assert_eq!(
            answer(Some("bytes=0-4"), 10),
            RangeAnswer::Partial { start: 0, len: 5 }
        );
        assert_eq!(
            answer(Some("bytes=5-"), 10),
            RangeAnswer::Partial { start: 5, len: 5 }
        );
        assert_eq!(
            answer(Some("bytes=-3"), 10),
            RangeAnswer::Partial { start: 7, len: 3 }
        );
        assert_eq!(
            answer(Some("bytes=-30"), 10),
            RangeAnswer::Partial { start: 0, len: 10 }
        );
        assert_eq!(
            answer(Some("bytes=8-100"), 10),
            RangeAnswer::Partial { start: 8, len: 2 }
        );
        assert_eq!(answer(Some("bytes=10-"), 10), RangeAnswer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=0-1,3-4"), 10), RangeAnswer::Whole);
        assert_eq!(answer(Some("items=0-1"), 10), RangeAnswer::Whole);
        assert_eq!(
            answer(Some("Bytes=0-1"), 10),
            RangeAnswer::Partial { start: 0, len: 2 }
        );
        assert_eq!(
            answer(Some("BYTES=-2"), 10),
            RangeAnswer::Partial { start: 8, len: 2 }
        );
        assert_eq!(answer(Some("bytés=0-1"), 10), RangeAnswer::Whole);
        assert_eq!(answer(Some("bytes=x-y"), 10), RangeAnswer::Whole);
        assert_eq!(answer(Some("bytes=5-2"), 10), RangeAnswer::Whole);
    }
}
